package app

import (
	"io/fs"
	"strings"
	"testing"

	"fieldsync/mobileclient/webapp"
	"fieldsync/server/servertest"
)

// TestApp_SimplifiedChinese: the field app's own text (its pages, scripts
// and manifest; not the vendored files) holds no character that exists
// only in Traditional Chinese.
func TestApp_SimplifiedChinese(t *testing.T) {
	trad := servertest.TraditionalOnly(t)
	n := 0
	err := fs.WalkDir(webapp.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(p, "vendor/") {
			return err
		}
		if !strings.HasSuffix(p, ".js") && !strings.HasSuffix(p, ".html") && !strings.HasSuffix(p, ".css") && !strings.HasSuffix(p, ".webmanifest") {
			return nil
		}
		b, err := fs.ReadFile(webapp.FS(), p)
		if err != nil {
			return err
		}
		n++
		if got := trad(string(b)); got != "" {
			t.Errorf("%s holds Traditional characters: %s", p, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("scanned only %d files", n)
	}
}
