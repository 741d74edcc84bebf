package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestProfileOnSignal sends SIGUSR1 and SIGUSR2 to this process with the
// profile variables set, and checks the three files appear complete
// (gzipped pprof profiles, a trace) only after SIGUSR2.
func TestProfileOnSignal(t *testing.T) {
	dir := t.TempDir()
	cpu, tr, mem := filepath.Join(dir, "cpu"), filepath.Join(dir, "trace"), filepath.Join(dir, "mem")
	t.Setenv(envCPUProfile, cpu)
	t.Setenv(envTrace, tr)
	t.Setenv(envMemProfile, mem)
	var log bytes.Buffer
	stop := profileOnSignal(&log)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	for i := 0; i < 200_000; i++ { // some work to sample
		sum = sha256.Sum256(sum[:])
	}
	for _, p := range []string{cpu, tr, mem} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists before SIGUSR2", p)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []string{cpu, tr, mem} {
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not appear after SIGUSR2; log:\n%s", p, log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, p := range []string{cpu, mem} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Fatalf("%s is not a gzipped pprof profile (%d bytes)", p, len(data))
		}
	}
	if fi, err := os.Stat(tr); err != nil || fi.Size() == 0 {
		t.Fatalf("trace: %v", err)
	}
	if log.Len() != 0 {
		t.Fatalf("log: %s", log.String())
	}
}
