package syncproto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// CursorVersion is the layout version inside cursor tokens.
const CursorVersion = 1

// Cursor is where a device stands in the server's change log. Devices treat
// the token as opaque; only the server reads it. The token is the
// base64url JSON payload, a dot, and a truncated HMAC-SHA256 of the payload
// under a server key, so it cannot be forged or moved to another device.
type Cursor struct {
	V      int      `json:"v"`
	Epoch  string   `json:"e"`           // server epoch; a restore or reset starts a new one
	Device string   `json:"d"`           // device the cursor was issued to
	Seq    int64    `json:"s"`           // last change-log sequence covered
	Roots  []string `json:"r,omitempty"` // assigned place roots the device has in full
	// Snapshot, when set, is an unfinished copy of newly gained places.
	Snap *Snapshot `json:"n,omitempty"`
}

// Snapshot tracks a paged copy of places that entered a device's scope.
// Stage walks places, forms, households, visits in that order; After is the
// last id sent in the current stage.
type Snapshot struct {
	Roots []string `json:"r"`
	// Full is set for a first or reset copy: forms travel too.
	Full  bool   `json:"f,omitempty"`
	Stage int    `json:"g"`
	After string `json:"a,omitempty"`
}

const cursorMACLen = 16

// EncodeCursor signs c with key and returns the token.
func EncodeCursor(key []byte, c Cursor) string {
	c.V = CursorVersion
	payload, _ := json.Marshal(c) // cannot fail: plain types
	mac := hmac.New(sha256.New, key)
	mac.Write(payload)
	sum := mac.Sum(nil)[:cursorMACLen]
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sum)
}

// MaxCursorLen bounds the token a server will try to parse.
const MaxCursorLen = 8 << 10

// DecodeCursor verifies and parses a token. The empty token is the zero
// cursor (a first sync). A token that is malformed or whose MAC does not
// verify is CodeInvalidCursor.
func DecodeCursor(key []byte, token string) (Cursor, error) {
	if token == "" {
		return Cursor{}, nil
	}
	bad := func(why string) (Cursor, error) {
		return Cursor{}, Errorf(CodeInvalidCursor, "cursor: %s", why)
	}
	if len(token) > MaxCursorLen {
		return bad("too long")
	}
	p, m, ok := strings.Cut(token, ".")
	if !ok {
		return bad("malformed")
	}
	// Strict: a token differs from the one handed out in no bit, not even
	// in the unused low bits of its last character.
	payload, err := base64.RawURLEncoding.Strict().DecodeString(p)
	if err != nil {
		return bad("malformed payload")
	}
	sum, err := base64.RawURLEncoding.Strict().DecodeString(m)
	if err != nil || len(sum) != cursorMACLen {
		return bad("malformed signature")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(payload)
	if !hmac.Equal(sum, mac.Sum(nil)[:cursorMACLen]) {
		return bad("signature does not verify")
	}
	var c Cursor
	if err := json.Unmarshal(payload, &c); err != nil {
		return bad("malformed payload")
	}
	if c.V != CursorVersion {
		return bad("unknown cursor version")
	}
	if c.Seq < 0 {
		return bad("negative sequence")
	}
	return c, nil
}
