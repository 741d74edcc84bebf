package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paulmach/orb"

	"fieldsync/server/app"
	"fieldsync/server/evidence"
	"fieldsync/server/geo"
	"fieldsync/server/sqlstore"
)

// readmeSection is the README section whose code block
// TestReadme_TwoDevices runs.
const readmeSection = "## Two devices against the demo data"

// readmeBlock returns the indented code block of the README section.
func readmeBlock(t *testing.T, readme string) string {
	t.Helper()
	i := strings.Index(readme, "\n"+readmeSection+"\n")
	if i < 0 {
		t.Fatalf("README.md has no section %q", readmeSection)
	}
	sec := readme[i+len(readmeSection)+2:]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	var lines []string
	for _, l := range strings.Split(sec, "\n") {
		if code, ok := strings.CutPrefix(l, "    "); ok {
			lines = append(lines, code)
		} else if len(lines) > 0 && strings.TrimSpace(l) != "" {
			break // the block ended
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestReadme_TwoDevices runs the README's "Two devices against the demo
// data" block as it is written, with the fieldsync and fieldcli binaries
// for `go run`, a free loopback port for 8080 and a temp folder for /tmp,
// and checks what the server holds afterwards: li's visit inside 采山坪
// with its photo uploaded, and the household edits of both devices.
func TestReadme_TwoDevices(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "sed", "awk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README block needs %s: %v", tool, err)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, string(readme))
	for _, want := range []string{"go run ./server/cmd/fieldsync", "go run ./mobileclient/cmd/fieldcli", "localhost:8080", "/tmp/",
		"forms -template water_cellar_progress", " photo ", " tasks"} {
		if !strings.Contains(block, want) {
			t.Fatalf("README block lacks %q:\n%s", want, block)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./server/cmd/fieldsync", "./mobileclient/cmd/fieldcli")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer(
		"/tmp/", work+"/",
		"go run ./server/cmd/fieldsync", filepath.Join(bin, "fieldsync"),
		"go run ./mobileclient/cmd/fieldcli", filepath.Join(bin, "fieldcli"),
		"localhost:8080", addr,
	).Replace(block)

	outPath, errPath := filepath.Join(tmp, "stdout"), filepath.Join(tmp, "stderr")
	stdout, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	// Files, not buffers: the background server keeps the outputs open
	// after bash exits. Its own process group lets the cleanup stop bash
	// and the server together.
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", script)
	cmd.Dir = root
	// The server takes unset flags from FIELDSYNC_<FLAG>: none of the
	// caller's may change what the README's flags say.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FIELDSYNC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+filepath.Join(tmp, "config"))
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	runErr := cmd.Wait()
	out, _ := os.ReadFile(outPath)
	if runErr != nil {
		errOut, _ := os.ReadFile(errPath)
		t.Fatalf("README block failed: %v\nscript:\n%s\nstdout:\n%s\nstderr (tail):\n%s", runErr, script, out, tail(errOut, 4000))
	}

	// What the devices printed.
	m := regexp.MustCompile(`queued ([0-9a-f]{64}) \(image/png, \d+ bytes\) for visit (\S+) slot progress`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no photo queued in the output:\n%s", out)
	}
	sum, visitID := string(m[1]), string(m[2])
	if !regexp.MustCompile(`\trework\topen\tvisit=\S+\thousehold=\S+\t初验不达标`).Match(out) {
		t.Errorf("tasks printed no open rework task with its reason:\n%s", out)
	}
	if !strings.Contains(string(out), "water_cellar_progress\tv1\t水窖建设进度") {
		t.Errorf("forms did not list water_cellar_progress:\n%s", out)
	}

	// Stop the server (SIGTERM: a clean shutdown), then read its database.
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); syscall.Kill(-pgid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not stop within 15 s of SIGTERM")
		}
	}
	st, err := sqlstore.Open(ctx, sqlstore.Config{Path: app.DBPath(filepath.Join(work, "fs"))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	v, err := st.Visit(ctx, visitID)
	if err != nil {
		t.Fatalf("visit %s on the server: %v", visitID, err)
	}
	const group = "530100101201001"
	if v.FormID != "water_cellar_progress" || v.UserName != "wangge_li" || v.PlaceCode != group || v.Point == nil {
		t.Errorf("server visit: form %s, user %s, place %s, point %v", v.FormID, v.UserName, v.PlaceCode, v.Point)
	}
	if len(v.Evidence) != 1 || v.Evidence[0].SHA256 != sum || v.Evidence[0].Slot != "progress" {
		t.Errorf("server visit evidence %+v, want %s in progress", v.Evidence, sum)
	}
	if ok, err := st.BlobPresent(ctx, sum); err != nil || !ok {
		t.Errorf("photo %s not on the server: present=%v err=%v", sum, ok, err)
	}
	p, err := st.Place(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	boundary, err := geo.ParseBoundary(p.Boundary)
	if err != nil {
		t.Fatal(err)
	}
	if v.Point != nil && !geo.Contains(boundary, orb.Point{v.Point.Lon, v.Point.Lat}) {
		t.Errorf("visit point %v is outside %s (%s)", *v.Point, group, p.Name)
	}
	flags, err := st.EvidenceFlags(ctx, visitID)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flags {
		if f.Flag == evidence.FlagOutsidePlace || f.Flag == evidence.FlagNoGPS || f.Flag == evidence.FlagPoorAccuracy {
			t.Errorf("visit flagged: %+v", f)
		}
	}

	h, deleted, err := st.Household(ctx, v.HouseholdID)
	if err != nil || deleted {
		t.Fatalf("household %s: deleted=%v err=%v", v.HouseholdID, deleted, err)
	}
	for field, want := range map[string]string{"phone": `"13800000000"`, "notes": `"户主外出务工"`} {
		if got := string(h.Fields[field]); got != want {
			t.Errorf("household %s: %s = %s, want %s (both devices' edits merged)", h.ID, field, got, want)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return append([]byte("…"), b[len(b)-n:]...)
	}
	return b
}

// TestReadmeBlock_Extract: the block is the section's first run of
// indented lines.
func TestReadmeBlock_Extract(t *testing.T) {
	doc := fmt.Sprintf("# T\n\n%s\n\nText.\n\n    a\n    b\n\nMore text.\n\n    not this\n\n## Next\n\n    c\n", readmeSection)
	if got := readmeBlock(t, doc); got != "a\nb\n" {
		t.Errorf("block %q", got)
	}
}
