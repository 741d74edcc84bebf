package mobileclient

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImports_NoServer: the device library, its commands (fieldcli,
// fieldsim) and the protocol package build without any server package,
// so the device side stands beside syncproto; fieldsim drives the built
// fieldsync binary. (Tests of the library still start an in-process
// server through server/servertest; `go list -deps` without -test does
// not follow them.)
func TestImports_NoServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "fieldsync/mobileclient/...", "fieldsync/syncproto/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, want := range []string{"fieldsync/mobileclient", "fieldsync/mobileclient/cmd/fieldsim", "fieldsync/syncproto"} {
		if !slices.Contains(deps, want) {
			t.Fatalf("go list -deps does not list %s: %q", want, deps)
		}
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "fieldsync/server") {
			t.Errorf("the device side depends on %s", d)
		}
	}
}
