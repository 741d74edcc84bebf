// Package s3test gives tests a real S3 server: the shared versitygw that
// the test script (bash .ci/test) starts, or a private one a test starts
// and stops itself (for outage tests).
//
// The script exports:
//
//	FIELDSYNC_TEST_S3_ENDPOINT    host:port of the shared server (plain http)
//	FIELDSYNC_TEST_S3_ACCESS_KEY  its root access key
//	FIELDSYNC_TEST_S3_SECRET_KEY  its root secret key
//	FIELDSYNC_TEST_S3_PID         its process id
//	FIELDSYNC_TEST_S3_CMD         a shell command that restarts it
//	FIELDSYNC_TEST_VERSITYGW      path of the versitygw binary
//	FIELDSYNC_REQUIRE_S3=1        missing S3 fails tests instead of skipping
//
// go test runs packages in parallel, all against the shared server: a test
// must never stop the shared server. Outage tests use StartServer.
//
// Without the variables (a plain `go test`), tests that need S3 are
// skipped, unless FIELDSYNC_REQUIRE_S3 or CI is set, when they fail.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"fieldsync/server/blob/s3blob"
)

// Environment variable names set by .ci/test.
const (
	EnvEndpoint  = "FIELDSYNC_TEST_S3_ENDPOINT"
	EnvAccessKey = "FIELDSYNC_TEST_S3_ACCESS_KEY"
	EnvSecretKey = "FIELDSYNC_TEST_S3_SECRET_KEY"
	EnvPID       = "FIELDSYNC_TEST_S3_PID"
	EnvCmd       = "FIELDSYNC_TEST_S3_CMD"
	EnvVersitygw = "FIELDSYNC_TEST_VERSITYGW"
	EnvRequire   = "FIELDSYNC_REQUIRE_S3"
)

// Credentials used for private servers started by StartServer.
const (
	privateAccessKey = "fieldsync-private"
	privateSecretKey = "fieldsync-private-secret"
)

// required reports whether a missing S3 server must fail the test.
func required() bool {
	return os.Getenv(EnvRequire) != "" || os.Getenv("CI") != ""
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	msg := why + "; run the tests with `bash .ci/test`, which starts a real S3 server (versitygw)"
	if required() {
		t.Fatal(msg + " (" + EnvRequire + " or CI is set, so this is an error)")
	}
	t.Skip(msg)
}

// Config returns an s3blob.Config for the shared test server with a
// fresh, unique bucket name (s3blob.New creates the bucket). When the
// test ends the bucket is emptied and removed, best effort. It skips the
// test (or fails it, see the package comment) if no server is configured.
func Config(t testing.TB) s3blob.Config {
	t.Helper()
	ep := os.Getenv(EnvEndpoint)
	if ep == "" {
		unavailable(t, EnvEndpoint+" is not set")
	}
	cfg := s3blob.Config{
		Endpoint:  ep,
		AccessKey: os.Getenv(EnvAccessKey),
		SecretKey: os.Getenv(EnvSecretKey),
		Bucket:    BucketName(t),
	}
	t.Cleanup(func() { RemoveBucket(t, cfg) })
	return cfg
}

// BucketName returns a unique, valid bucket name mentioning the test.
func BucketName(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	var sb strings.Builder
	for _, c := range strings.ToLower(t.Name()) {
		if sb.Len() >= 40 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			sb.WriteRune(c)
		case sb.Len() > 0 && !strings.HasSuffix(sb.String(), "-"):
			sb.WriteByte('-')
		}
	}
	name := strings.Trim(sb.String(), "-")
	return "fst-" + name + "-" + hex.EncodeToString(b[:])
}

// RemoveBucket empties and removes cfg.Bucket, logging (not failing) on
// errors. A missing bucket is fine.
func RemoveBucket(t testing.TB, cfg s3blob.Config) {
	t.Helper()
	cl, err := s3blob.NewClient(cfg)
	if err != nil {
		t.Logf("s3test cleanup: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := cl.BucketExists(ctx, cfg.Bucket); err != nil || !ok {
		if err != nil {
			t.Logf("s3test cleanup: bucket %s: %v", cfg.Bucket, err)
		}
		return
	}
	for obj := range cl.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Logf("s3test cleanup: list %s: %v", cfg.Bucket, obj.Err)
			return
		}
		if err := cl.RemoveObject(ctx, cfg.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Logf("s3test cleanup: remove %s/%s: %v", cfg.Bucket, obj.Key, err)
		}
	}
	if err := cl.RemoveBucket(ctx, cfg.Bucket); err != nil {
		t.Logf("s3test cleanup: remove bucket %s: %v", cfg.Bucket, err)
	}
}

// VersitygwPath returns the versitygw binary: $FIELDSYNC_TEST_VERSITYGW,
// else .ci/bin/versitygw in the module root above the working folder.
// It skips or fails the test if there is none.
func VersitygwPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvVersitygw); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".ci", "bin", "versitygw")
				if _, err := os.Stat(p); err == nil {
					return p
				}
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	unavailable(t, EnvVersitygw+" is not set and .ci/bin/versitygw does not exist")
	return ""
}

// Server is a private versitygw process owned by one test, for tests that
// stop, pause or restart the object store. It keeps its port and data
// across Stop/Start. It is stopped when the test ends.
type Server struct {
	t        testing.TB
	bin      string
	dataDir  string
	logPath  string
	endpoint string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has exited
}

// StartServer starts a private versitygw (posix backend on a temporary
// folder) on a free loopback port and waits until it answers.
func StartServer(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		t:       t,
		bin:     VersitygwPath(t),
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "versitygw.log"),
	}
	if err := os.Mkdir(s.dataDir, 0o755); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(s.Stop)
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("s3test: %v", err)
		}
		s.endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("s3test: starting versitygw: %v\n%s", lastErr, s.logTail())
	return nil
}

// Endpoint returns the server's host:port.
func (s *Server) Endpoint() string { return s.endpoint }

// Config returns an s3blob.Config for this server with a fresh unique
// bucket name.
func (s *Server) Config(t testing.TB) s3blob.Config {
	return s3blob.Config{
		Endpoint:  s.endpoint,
		AccessKey: privateAccessKey,
		SecretKey: privateSecretKey,
		Bucket:    BucketName(t),
	}
}

// Stop kills the server and waits for it to exit. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Signal(syscall.SIGCONT) // in case it is paused
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// Start restarts a stopped server on the same port and data, and waits
// until it answers. Starting a running server does nothing.
func (s *Server) Start() {
	s.t.Helper()
	var err error
	for range 20 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.t.Fatalf("s3test: restarting versitygw: %v\n%s", err, s.logTail())
}

// Pause freezes the server (SIGSTOP): the kernel still accepts
// connections but nothing answers, like a hung server.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	// The signal is delivered asynchronously: on a loaded machine the
	// server may still answer a request or two. Wait until the kernel
	// reports it stopped.
	s.mu.Lock()
	pid := s.proc.Pid
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // not Linux, or gone: nothing to wait for
		}
		// Fields: pid (comm) state ...; comm may hold spaces, so look
		// after the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Fatalf("s3test: server did not stop after SIGSTOP")
}

// Resume unfreezes a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("s3test: server is not running")
	}
	if err := s.proc.Signal(sig); err != nil {
		s.t.Fatalf("s3test: signal %v: %v", sig, err)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "versitygw log:\n" + string(b)
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin,
		"--port", s.endpoint,
		"--access", privateAccessKey,
		"--secret", privateSecretKey,
		"--quiet",
		"posix", s.dataDir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited: %v", waitErr)
		default:
		}
		resp, err := client.Get("http://" + s.endpoint + "/")
		if err == nil {
			resp.Body.Close()
			s.proc, s.exited = cmd.Process, exited
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return errors.New("versitygw did not answer within 15s")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
