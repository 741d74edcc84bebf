package outboxfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample() File {
	data := []byte("\xff\xd8\xff a photo")
	sum := sha256.Sum256(data)
	return File{Format: Format, Version: Version, ExportedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC), DeviceID: "dev",
		User: User{ID: 3, Username: "wangge_li"}, ProtocolVersion: 1,
		Mutations: []json.RawMessage{json.RawMessage(`{"seq":7,"kind":"visit.create","hlc":"x"}`), json.RawMessage(`{"seq":8,"kind":"household.update"}`)},
		Blobs:     []Blob{{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), MediaType: "image/jpeg", VisitID: "v", Slot: "progress", Data: data}}}
}

func TestDecode_RoundTrip(t *testing.T) {
	f := sample()
	b, _ := json.Marshal(f)
	if !bytes.Contains(b, []byte(`"data":"/9j/`)) {
		t.Errorf("blob data is not base64 in JSON: %s", b)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != "dev" || len(got.Mutations) != 2 || string(got.Mutations[0]) != string(f.Mutations[0]) || got.Blobs[0].Verify() != nil {
		t.Errorf("round trip: %+v", got)
	}
	got.Blobs[0].Data[0] ^= 1
	if err := got.Blobs[0].Verify(); err == nil || !strings.Contains(err.Error(), "hash") {
		t.Errorf("a changed byte: %v", err)
	}
	got.Blobs[0].Data = got.Blobs[0].Data[1:]
	if err := got.Blobs[0].Verify(); err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("a lost byte: %v", err)
	}
}

func TestDecode_Invalid(t *testing.T) {
	for name, body := range map[string]string{
		"empty":       ``,
		"array":       `[]`,
		"noFormat":    `{"version":1,"device_id":"d"}`,
		"seqZero":     `{"format":"fieldsync-outbox","version":1,"device_id":"d","mutations":[{"seq":0,"kind":"visit.create"}]}`,
		"noKind":      `{"format":"fieldsync-outbox","version":1,"device_id":"d","mutations":[{"seq":1}]}`,
		"backwards":   `{"format":"fieldsync-outbox","version":1,"device_id":"d","mutations":[{"seq":2,"kind":"k"},{"seq":1,"kind":"k"}]}`,
		"notObject":   `{"format":"fieldsync-outbox","version":1,"device_id":"d","mutations":[7]}`,
		"hugeBlob":    `{"format":"fieldsync-outbox","version":1,"device_id":"d","blobs":[{"sha256":"` + strings.Repeat("a", 64) + `","size":99999999999}]}`,
		"badData":     `{"format":"fieldsync-outbox","version":1,"device_id":"d","blobs":[{"sha256":"` + strings.Repeat("a", 64) + `","size":1,"data":"***"}]}`,
		"version0":    `{"format":"fieldsync-outbox","device_id":"d"}`,
		"trailingBad": `{"format":"fieldsync-outbox","version":1,"device_id":"d"`,
		"twoObjects":  `{"format":"fieldsync-outbox","version":1,"device_id":"d"} {}`,
	} {
		if _, err := Decode(strings.NewReader(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := json.Marshal(sample())
	f.Add(b)
	f.Add([]byte(`{"format":"fieldsync-outbox","version":1,"device_id":"d","mutations":[{"seq":1,"kind":"k"}],"blobs":[]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Decode(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if got.Format != Format || got.Version != Version || got.DeviceID == "" {
			t.Fatalf("accepted %+v", got)
		}
		for i := 1; i < len(got.Mutations); i++ {
			var a, b mutationHead
			json.Unmarshal(got.Mutations[i-1], &a)
			json.Unmarshal(got.Mutations[i], &b)
			if b.Seq != a.Seq+1 {
				t.Fatalf("accepted seq %d after %d", b.Seq, a.Seq)
			}
		}
	})
}
