package servertest

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// SaveScreenshot keeps a browser test's PNG screenshot under name when
// FIELDSYNC_SCREENSHOTS is set: "1" means the repository's
// docs/screenshots folder (the README's pictures), anything else names a
// folder. The PNG is re-encoded with the best compression, so committed
// pictures stay small. Failures are logged, never fatal: screenshots are
// documentation, not a check.
func SaveScreenshot(t testing.TB, name string, shot []byte) {
	t.Helper()
	dir := os.Getenv("FIELDSYNC_SCREENSHOTS")
	if dir == "" {
		return
	}
	if dir == "1" {
		root, err := repoRoot()
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
			return
		}
		dir = filepath.Join(root, "docs", "screenshots")
	}
	if img, err := png.Decode(bytes.NewReader(shot)); err == nil {
		var buf bytes.Buffer
		if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, img); err == nil && buf.Len() < len(shot) {
			shot = buf.Bytes()
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// repoRoot is the nearest folder above the working directory with a go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", os.ErrNotExist
		}
		dir = up
	}
}
