package upload_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"fieldsync/server/upload"
)

func TestParseMetadata(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	got, err := upload.ParseMetadata("sha256 " + b64("ab") + ", filename " + b64("水窖 1.jpg") + ",filetype " + b64("image/jpeg") + ",is_confidential")
	if err != nil || got["sha256"] != "ab" || got["filename"] != "水窖 1.jpg" || got["filetype"] != "image/jpeg" || len(got) != 4 {
		t.Fatalf("got %v, %v", got, err)
	}
	if v, ok := got["is_confidential"]; !ok || v != "" {
		t.Errorf("key without value: %q %v", v, ok)
	}
	// Unpadded base64 is accepted too.
	if got, err := upload.ParseMetadata("filename " + strings.TrimRight(b64("ab.jpg0"), "=")); err != nil || got["filename"] != "ab.jpg0" {
		t.Errorf("unpadded: %v %v", got, err)
	}
	if got, err := upload.ParseMetadata(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v", got, err)
	}
	for _, bad := range []string{
		"filetype " + b64("image/jpeg/../x"), "filetype " + b64("jpeg"), "filename " + b64("a\nb"),
		"filename " + b64(strings.Repeat("a", upload.MaxMetadataValue+1)), "k?y " + b64("v"), " " + b64("v"),
		"a,a", "filename ***", strings.Repeat("x", upload.MaxMetadataHeader+1),
		"filename " + string([]byte{0xff}) + "", "filename " + base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}),
	} {
		if _, err := upload.ParseMetadata(bad); !errors.Is(err, upload.ErrMetadata) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	for _, bad := range []string{"file\x01name " + b64("v"), "file\nname " + b64("v"), "na me " + b64("v"), "filename " + b64("a") + "=="} {
		if _, err := upload.ParseMetadata(bad); !errors.Is(err, upload.ErrMetadata) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	m := map[string]string{"sha256": "ab", "filename": "a b.jpg", "flag": ""}
	if back, err := upload.ParseMetadata(upload.EncodeMetadata(m)); err != nil || len(back) != 3 || back["filename"] != "a b.jpg" || back["flag"] != "" {
		t.Errorf("round trip: %v %v", back, err)
	}
}

// TestParseMetadata_OpaqueValues: values other than media types are
// opaque; paths such as Uppy's relativePath are kept as sent.
func TestParseMetadata_OpaqueValues(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, v := range []string{"DCIM/100CAMERA/IMG_0001.JPG", `C:\Users\李\IMG_0001.JPG`, "..", ".", "../x", "/"} {
		h := "relativePath " + b64(v) + ",filename " + b64(v)
		got, err := upload.ParseMetadata(h)
		if err != nil || got["relativePath"] != v || got["filename"] != v {
			t.Errorf("%q: got %v, %v", v, got, err)
		}
	}
}

func TestParseChecksum(t *testing.T) {
	sum := make([]byte, 32)
	sum[0] = 7
	good := "sha256 " + base64.StdEncoding.EncodeToString(sum)
	if got, err := upload.ParseChecksum(good); err != nil || got[0] != 7 || len(got) != 32 {
		t.Fatalf("good: %v %v", got, err)
	}
	for _, bad := range []string{"", "sha256", "md5 " + base64.StdEncoding.EncodeToString(sum[:16]), "sha1 abc", "sha256 !!!", "sha256 " + base64.StdEncoding.EncodeToString(sum[:31])} {
		if _, err := upload.ParseChecksum(bad); !errors.Is(err, upload.ErrChecksum) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParseMetadata: any header either parses into values that pass the
// rules and survive a round trip, or is refused with ErrMetadata.
func FuzzParseMetadata(f *testing.F) {
	f.Add("sha256 YWI=,filename YS5qcGc=,filetype aW1hZ2UvanBlZw==")
	f.Add("filename Li4vLi4vZXRjL3Bhc3N3ZA==")
	f.Add("a,b c,d")
	f.Fuzz(func(t *testing.T, h string) {
		m, err := upload.ParseMetadata(h)
		if err != nil {
			if !errors.Is(err, upload.ErrMetadata) {
				t.Fatalf("error %v does not wrap ErrMetadata", err)
			}
			return
		}
		for k, v := range m {
			if len(v) > upload.MaxMetadataValue || strings.ContainsAny(v, "\x00\n\r\x7f") || ((k == "filetype" || k == "type") && v != "" && strings.Count(v, "/") != 1) {
				t.Fatalf("accepted %q = %q", k, v)
			}
		}
		back, err := upload.ParseMetadata(upload.EncodeMetadata(m))
		if err != nil || len(back) != len(m) {
			t.Fatalf("round trip of %v: %v %v", m, back, err)
		}
		for k, v := range m {
			if back[k] != v {
				t.Fatalf("round trip %q: %q != %q", k, back[k], v)
			}
		}
	})
}

// FuzzParseChecksum: never panics; accepted digests are 32 bytes.
func FuzzParseChecksum(f *testing.F) {
	f.Add("sha256 " + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("SHA256  AAAA")
	f.Fuzz(func(t *testing.T, h string) {
		sum, err := upload.ParseChecksum(h)
		if err == nil && len(sum) != 32 {
			t.Fatalf("digest of %d bytes", len(sum))
		}
		if err != nil && !errors.Is(err, upload.ErrChecksum) {
			t.Fatalf("error %v", err)
		}
	})
}
