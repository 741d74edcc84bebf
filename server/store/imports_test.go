package store_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImports_HandlersSeeOnlyTheInterfaces: the HTTP handlers, the upload
// handler, the exports and the outbox import depend on this package's
// interfaces, never on an engine (sqlstore, pgsql), so a store can be
// added or split without touching them.
func TestImports_HandlersSeeOnlyTheInterfaces(t *testing.T) {
	for _, pkg := range []string{"fieldsync/server/api", "fieldsync/server/web", "fieldsync/server/export",
		"fieldsync/server/upload", "fieldsync/server/outboximport"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, "fieldsync/server/store") {
			t.Fatalf("%s: go list -deps does not list fieldsync/server/store: %q", pkg, deps)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "fieldsync/server/sqlstore") {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
}
