package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRun_SecondServerOnSameDataRefused: a second server on a data folder
// that a running server holds exits at once with a clear message; once
// the first has stopped, a new one starts.
func TestRun_SecondServerOnSameDataRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(ctx context.Context) (<-chan error, string) {
		addrc := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{DataDir: dir, Addr: "127.0.0.1:0", Logger: quiet, Out: io.Discard,
				Ready: func(a string) { addrc <- a }})
		}()
		select {
		case a := <-addrc:
			return done, a
		case err := <-done:
			return done, "error: " + err.Error()
		case <-time.After(30 * time.Second):
			t.Fatal("no start")
		}
		return nil, ""
	}
	ctx1, stop1 := context.WithCancel(context.Background())
	done1, addr := start(ctx1)
	if strings.HasPrefix(addr, "error") {
		t.Fatal(addr)
	}

	ctx2, stop2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop2()
	err := Run(ctx2, Config{DataDir: dir, Addr: "127.0.0.1:0", Logger: quiet, Out: io.Discard})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second server: %v, want ErrDataDirInUse", err)
	}
	if !strings.Contains(err.Error(), "process") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("message does not say who holds which folder: %v", err)
	}

	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("first server: %v", err)
	}
	ctx3, stop3 := context.WithCancel(context.Background())
	done3, addr := start(ctx3)
	if strings.HasPrefix(addr, "error") {
		t.Fatalf("restart after the first stopped: %s", addr)
	}
	stop3()
	<-done3
}

func TestLockDataDir_ReleaseAndRetake(t *testing.T) {
	dir := t.TempDir()
	release, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second lock: %v", err)
	}
	release()
	release2, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	release2()
}
