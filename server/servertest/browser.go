package servertest

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// ChromiumPath finds the browser for browser tests: FIELDSYNC_CHROMIUM,
// then Debian's chromium. Without one the test skips, except under CI (CI
// or FIELDSYNC_REQUIRE_S3 set, as .ci/test does), where it fails.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	cands := []string{os.Getenv("FIELDSYNC_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			cands = append(cands, p)
		}
	}
	for _, p := range cands {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if os.Getenv("CI") != "" || os.Getenv("FIELDSYNC_REQUIRE_S3") != "" {
		t.Fatal("chromium not found (set FIELDSYNC_CHROMIUM or apt-get install chromium); browser tests are required here")
	}
	t.Skip("chromium not found; set FIELDSYNC_CHROMIUM to run the browser tests")
	return ""
}

// SyncBuffer is a log or output sink that the server's goroutines and
// the test may use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
