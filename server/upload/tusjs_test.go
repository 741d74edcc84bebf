package upload_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/upload/uploadtest"
)

// EnvNodeModules names the node_modules folder holding tus-js-client
// (set by .ci/test).
const EnvNodeModules = "FIELDSYNC_TEST_NODE_MODULES"

// nodeModules returns the node_modules folder with tus-js-client and the
// node binary, skipping the test when they are missing, unless the test
// script or CI runs it: then it fails.
func nodeModules(t *testing.T) (modules, node string) {
	t.Helper()
	missing := func(why string) {
		msg := why + "; run the tests with `bash .ci/test`, which installs tus-js-client into .ci/node"
		if os.Getenv("FIELDSYNC_REQUIRE_S3") != "" || os.Getenv("CI") != "" {
			t.Fatal(msg + " (FIELDSYNC_REQUIRE_S3 or CI is set, so this is an error)")
		}
		t.Skip(msg)
	}
	modules = os.Getenv(EnvNodeModules)
	if modules == "" {
		missing(EnvNodeModules + " is not set")
	}
	if _, err := os.Stat(filepath.Join(modules, "tus-js-client", "package.json")); err != nil {
		missing("tus-js-client is not installed in " + modules)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH")
	}
	return modules, node
}

// TestTusJSClient uploads photos with the official JavaScript client,
// tus-js-client, against our endpoint: proof that we speak tus, not a
// dialect of our own.
func TestTusJSClient(t *testing.T) {
	modules, node := nodeModules(t)
	f := newField(t)
	script, err := filepath.Abs(filepath.Join("testdata", "tus_upload.js"))
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, data []byte, mode string) string {
		t.Helper()
		file := filepath.Join(t.TempDir(), "photo.jpg")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, script, f.env.URL+"/api/v1/uploads/", f.dev.Token, file, uploadtest.Sum(data), mode)
		cmd.Env = append(os.Environ(), EnvNodeModules+"="+modules)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node %s: %v\n%s", mode, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		mode string
		seed uint64
	}{{"stream", 21}, {"buffer", 22}} {
		t.Run(tc.mode, func(t *testing.T) {
			// About 300-400 KB: several PATCHes of 64 or 100 KiB.
			photo := evidencetest.JPEG(evidencetest.Photo{Seed: tc.seed, Width: 2400, Height: 1800, Quality: 100})
			if len(photo) < 200_000 {
				t.Fatalf("fixture too small: %d bytes", len(photo))
			}
			f.reference(t, photo)
			out := run(t, photo, tc.mode)
			var res struct {
				URL    string `json:"url"`
				Offset int64  `json:"offset"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || !strings.HasPrefix(res.URL, f.env.URL+"/api/v1/uploads/") {
				t.Fatalf("node output %q: %v", out, err)
			}
			f.present(t, photo)
			if got := f.partials(t); len(got) != 0 {
				t.Errorf("partial files left: %v", got)
			}
			// The same bytes again: the server says complete at once.
			out = run(t, photo, tc.mode)
			if !strings.Contains(out, `"url"`) {
				t.Fatalf("second upload: %s", out)
			}
		})
	}
}
