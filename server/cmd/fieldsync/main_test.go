package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fieldsync/server/servertest"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/sqlstore"
)

type syncBuffer = servertest.SyncBuffer

// TestRun_StartsServesAndShutsDown runs the binary's run path on a temp
// data folder, waits for /healthz, then cancels (as SIGTERM does) and
// expects a clean exit. A second start on the same folder must not print
// the first-start banner again.
func TestRun_StartsServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	start := func() (string, *syncBuffer, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"run", "-data", dir, "-addr", "127.0.0.1:0"}, &out, &errb) }()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if i := strings.Index(errb.String(), `"addr":"127.0.0.1:`); i >= 0 {
				rest := errb.String()[i+len(`"addr":"`):]
				return "http://" + rest[:strings.Index(rest, `"`)], &out, cancel, done
			}
			select {
			case err := <-done:
				t.Fatalf("run exited early: %v\n%s", err, errb.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("server did not start: %s", errb.String())
		return "", nil, nil, nil
	}
	url, out, cancel, done := start()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if resp.StatusCode != 200 || health.Status != "ok" || health.Checks["database"] != "ok" || health.Checks["blobs"] != "ok" {
		t.Fatalf("healthz = %d %+v", resp.StatusCode, health)
	}
	if !strings.Contains(out.String(), "登录：    admin / ") {
		t.Errorf("first start did not print the admin login:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no clean shutdown")
	}
	_, out2, cancel2, done2 := start()
	cancel2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out2.String(), "登录：") {
		t.Errorf("second start printed the password banner again")
	}
	// Every start says where the console and the field app are.
	for i, o := range []string{out.String(), out2.String()} {
		if !strings.Contains(o, "/console/") || !strings.Contains(o, "/app/") {
			t.Errorf("start %d did not print the console's and the app's URLs:\n%s", i+1, o)
		}
	}
}

func TestRun_UnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errb); err == nil {
		t.Fatal("want error")
	}
}

// TestBackupRestore_CLI: backup while the server runs, restore into a new
// folder, the restored server has the same data and a new epoch.
func TestBackupRestore_CLI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var out, errb syncBuffer
	if err := run(ctx, []string{"demo", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("demo: %v %s", err, errb.String())
	}
	file := filepath.Join(t.TempDir(), "b.db")
	if err := run(ctx, []string{"backup", "-data", dir, "-out", file}, &out, &errb); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if err := run(ctx, []string{"backup", "-data", dir, "-out", file}, &out, &errb); err == nil {
		t.Fatal("backup over an existing file must fail")
	}
	if err := run(ctx, []string{"backup", "-data", dir, "-to-object-store"}, &out, &errb); err != nil || !strings.Contains(out.String(), "backups/fieldsync-") {
		t.Fatalf("backup to object store: %v %s", err, out.String())
	}
	dir2 := t.TempDir()
	if err := run(ctx, []string{"restore", "-data", dir2, "-from", file}, &out, &errb); err != nil {
		t.Fatalf("restore: %v", err)
	}
	count := func(d, q string) (n int, epoch string) {
		st, err := sqlstore.Open(ctx, sqlstore.Config{Path: filepath.Join(d, "fieldsync.db")})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.DB().QueryRow(q).Scan(&n)
		return n, st.Epoch()
	}
	n1, e1 := count(dir, `SELECT count(*) FROM households`)
	n2, e2 := count(dir2, `SELECT count(*) FROM households`)
	if n1 != 875 || n2 != n1 || e1 == e2 {
		t.Fatalf("households %d/%d, epochs %s/%s", n1, n2, e1, e2)
	}
	bad := filepath.Join(t.TempDir(), "bad.db")
	os.WriteFile(bad, []byte("not a database"), 0o600)
	if err := run(ctx, []string{"restore", "-data", t.TempDir(), "-from", bad}, &out, &errb); err == nil {
		t.Fatal("restoring garbage must fail")
	}
}
