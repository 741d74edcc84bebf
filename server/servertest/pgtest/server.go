package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment variables for private servers, set by .ci/test.
const (
	EnvBin  = "FIELDSYNC_TEST_PG_BIN"  // PostgreSQL's bin folder (initdb, pg_ctl)
	EnvUser = "FIELDSYNC_TEST_PG_USER" // the user to run it as when tests run as root
)

// Server is a private PostgreSQL that one test starts, stops and restarts
// as it likes (outage and restart tests), without disturbing the shared
// server other packages use at the same time.
type Server struct {
	bin, runAs, dir, data, log, opts string
	port                             int
}

// StartServer initialises and starts a private server on a free loopback
// port: initdb in a temporary folder (superuser fieldsync, trust
// authentication, UTF8, C locale), then pg_ctl start. It is stopped
// (immediate) and its folder removed when the test ends. Without
// FIELDSYNC_TEST_PG_BIN it skips or fails as NewDatabase does; as root it
// runs the server as FIELDSYNC_TEST_PG_USER.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		unavailable(t, EnvBin+" is not set")
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		s.runAs = os.Getenv(EnvUser)
		if s.runAs == "" {
			t.Fatalf("pgtest: running as root, and %s names no user to run PostgreSQL as", EnvUser)
		}
	}
	// Not t.TempDir: its parents are private to us, and the server's user
	// must reach the folder.
	dir, err := os.MkdirTemp("", "fieldsync-pg-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if s.runAs != "" {
		u, err := user.Lookup(s.runAs)
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	s.dir, s.data, s.log = dir, filepath.Join(dir, "data"), filepath.Join(dir, "postgres.log")
	if out, err := s.run("initdb", "-D", s.data, "-U", "fieldsync", "--auth=trust",
		"--locale=C", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		s.port = port
		s.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100", port, dir)
		err = s.Start()
		if err == nil {
			break
		}
		if attempt == 3 { // the port may have been taken in between
			t.Fatalf("pgtest: %v", err)
		}
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err == nil {
			_, _ = s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop")
		}
	})
	return s
}

// URL is the server's maintenance database (postgres) as the superuser.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://fieldsync@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// NewDatabase is the package's NewDatabase on this server.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return newDatabase(t, u)
}

// Start starts the (stopped) server on its port and data, and returns once
// it accepts connections.
func (s *Server) Start() error {
	out, err := s.run("pg_ctl", "-D", s.data, "-o", s.opts, "-l", s.log, "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, s.tailLog())
	}
	return nil
}

// Stop stops the server: fast (sessions ended, a clean shutdown), or
// immediate (like a crash: no shutdown checkpoint, recovery at the next
// start).
func (s *Server) Stop(immediate bool) error {
	mode := "fast"
	if immediate {
		mode = "immediate"
	}
	if out, err := s.run("pg_ctl", "-D", s.data, "-m", mode, "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Restart is pg_ctl restart -m fast: the same port and data.
func (s *Server) Restart() error {
	out, err := s.run("pg_ctl", "-D", s.data, "-o", s.opts, "-l", s.log, "-m", "fast", "-w", "-t", "60", "restart")
	if err != nil {
		return fmt.Errorf("pg_ctl restart: %w\n%s\n%s", err, out, s.tailLog())
	}
	return nil
}

// run runs one of PostgreSQL's programs as the server's user, from /.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	name, argv := filepath.Join(s.bin, prog), args
	if s.runAs != "" {
		name, argv = "runuser", append([]string{"-u", s.runAs, "--", filepath.Join(s.bin, prog)}, args...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second // the server logs to its file, never to our pipe
	return cmd.CombinedOutput()
}

func (s *Server) tailLog() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("not a TCP address")
	}
	return addr.Port, nil
}
