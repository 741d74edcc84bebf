package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/seed"
)

// TestSeed_CLI runs `fieldsync seed` without a spec (the demo county),
// then with a spec on standard input, and reads the manifests.
func TestSeed_CLI(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"seed", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("seed: %v\n%s", err, errb.String())
	}
	var m seed.Manifest
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, out.String())
	}
	if m.Admin == nil || m.Admin.Username != "admin" || m.Demo == nil || m.HouseholdsTotal != 875 ||
		m.Database != filepath.Join(dir, "fieldsync.db") {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := os.Stat(m.Database); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errb.String(), "示范数据已加载") {
		t.Errorf("no progress on stderr:\n%s", errb.String())
	}

	spec := `{"places": [{"code": "` + m.Demo.OtherVillage + `901", "name": "测试组", "level": "group", "parent_code": "` + m.Demo.OtherVillage + `"}],
		"households": [{"place": "` + m.Demo.OtherVillage + `901", "count": 25, "seed": 4}]}`
	stdin = strings.NewReader(spec)
	t.Cleanup(func() { stdin = nil })
	manifest := filepath.Join(t.TempDir(), "manifest.json")
	out.Reset()
	errb.Reset()
	if err := run(ctx, []string{"seed", "-data", dir, "-spec", "-", "-out", manifest}, &out, &errb); err != nil {
		t.Fatalf("seed -spec -: %v\n%s", err, errb.String())
	}
	if out.Len() != 0 {
		t.Errorf("stdout with -out: %s", out.String())
	}
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	m = seed.Manifest{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.HouseholdsTotal != 900 || len(m.Imported) != 1 || m.Imported[0].Count != 25 || len(m.Places) != 1 {
		t.Fatalf("manifest %+v", m)
	}

	stdin = strings.NewReader(`{"households": [{"place": "x", "count": -1}]}`)
	if err := run(ctx, []string{"seed", "-data", dir, "-spec", "-"}, &out, &errb); err == nil {
		t.Fatal("a bad spec was accepted")
	}
}
