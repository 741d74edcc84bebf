package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportOutbox_Command checks the command's wiring: usage, a file that
// is not an outbox file, and a well-formed file of a device the server
// does not know (the import itself is tested in server/outboximport and,
// with a real tablet's file, in server/app's browser test).
func TestImportOutbox_Command(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"migrate", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("migrate: %v\n%s", err, errb.String())
	}
	write := func(name, body string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{filepath.Join(dir, "absent.json")}, "no such file"},
		// No account named admin yet on a migrated, empty database.
		{[]string{write("a.json", `{}`)}, `importer "admin"`},
		{[]string{"-by", "nobody", write("b.json", `{}`)}, `importer "nobody"`},
	} {
		out.Reset()
		err := run(ctx, append([]string{"import-outbox", "-data", dir}, c.args...), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("import-outbox %v: %v, want %q", c.args, err, c.want)
		}
	}
	if err := run(ctx, []string{"demo", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("demo: %v", err)
	}
	for _, c := range []struct{ body, want string }{
		{"not json", "not a valid outbox file"},
		{`{"format":"fieldsync-outbox","version":1,"device_id":"01JX0000000000000000000000","mutations":[],"blobs":[]}`, "no device"},
	} {
		err := run(ctx, []string{"import-outbox", "-data", dir, write("c.json", c.body)}, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("import-outbox of %q: %v, want %q", c.body, err, c.want)
		}
	}
}
