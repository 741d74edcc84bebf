package mobileclient

import (
	"encoding/json"

	"fieldsync/syncproto"
)

// fieldsText is json.Marshal of a household's fields, byte for byte (the
// device relies on that: see recomputeMany), through syncproto's encoder
// that skips reflection on the common shape.
func fieldsText(fields map[string]json.RawMessage) (string, error) {
	b, err := syncproto.AppendFields(make([]byte, 0, 256), fields)
	return string(b), err
}
