package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"fieldsync/server/sqlstore"
	"fieldsync/server/sqlstore/pgsql"
	"fieldsync/syncproto"
)

// gate is the HTTP handler from the moment the server listens: until the
// store is open and the API is built it answers every request with 503
// (Retry-After) and /healthz with a JSON body saying what it waits for
// (the database unreachable, the demo loading); then it hands every
// request to the real handler. A load balancer thus sees a live instance
// that is not ready yet, and takes it into rotation once /healthz says ok.
type gate struct {
	h atomic.Pointer[http.Handler]

	mu     sync.Mutex
	reason string // what /healthz says under checks.database while starting
}

func newGate(reason string) *gate {
	return &gate{reason: reason}
}

// wait sets what /healthz says while starting.
func (g *gate) wait(reason string) {
	g.mu.Lock()
	g.reason = reason
	g.mu.Unlock()
}

// open hands every request from now on to h.
func (g *gate) open(h http.Handler) { g.h.Store(&h) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	g.mu.Lock()
	reason := g.reason
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Retry-After", strconv.Itoa(5))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	if r.Method == http.MethodHead {
		return
	}
	var body any
	if r.URL.Path == "/healthz" {
		body = map[string]any{"status": "down", "starting": true, "checks": map[string]string{"database": reason},
			"protocol_version": syncproto.ProtocolVersion}
	} else {
		body = &syncproto.Error{Code: syncproto.CodeUnavailable, Message: "服务器正在启动：" + reason}
	}
	_ = json.NewEncoder(w).Encode(body)
}

// Backoff between attempts to reach a PostgreSQL that is down at start-up.
var (
	firstRetry = time.Second
	maxRetry   = 30 * time.Second
)

// pingTimeout bounds one attempt to reach PostgreSQL before the store
// opens (a host that drops packets would otherwise hold the attempt for
// the kernel's connect timeout).
const pingTimeout = 10 * time.Second

// openStoreRetrying opens the store. On SQLite it is OpenStore. On
// PostgreSQL a database that cannot be reached (connection refused, the
// server starting or shutting down, a timeout) is not fatal: it logs a
// line saying so, with the URL (password redacted) and the error, tells
// /healthz through g, and tries again after 1 s, doubling to 30 s, until
// it answers or ctx ends. Other errors (a wrong password, a missing
// database, a collation other than C, a failed migration) end the start.
func openStoreRetrying(ctx context.Context, cfg Config, db Database, g *gate, log *slog.Logger) (*sqlstore.Store, error) {
	if !db.IsPostgres() {
		return OpenStore(ctx, cfg)
	}
	delay := firstRetry
	for attempt := 1; ; attempt++ {
		err := pingPostgres(ctx, db)
		var st *sqlstore.Store
		if err == nil {
			st, err = OpenStore(ctx, cfg)
			if err == nil {
				if attempt > 1 {
					log.Info("已连接 PostgreSQL 数据库", "db", db.String(), "attempts", attempt)
				}
				return st, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := db.redactErr(err)
		if !pgsql.Retryable(err) {
			if msg == err.Error() {
				return nil, err
			}
			return nil, errors.New(msg) // the error quoted the password
		}
		g.wait(fmt.Sprintf("数据库不可达（%s）：%s；%s 后重试", db.String(), msg, delay))
		log.Warn("无法连接 PostgreSQL 数据库，稍后重试", "db", db.String(), "err", msg,
			"attempt", attempt, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, maxRetry)
	}
}

// pingPostgres connects once, bounded by pingTimeout.
func pingPostgres(ctx context.Context, db Database) error {
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	c, err := pgsql.Open(db.PostgresURL, pgsql.Options{MaxConns: 1})
	if err != nil {
		return fmt.Errorf("PostgreSQL 数据库 %s: %w", db, err)
	}
	defer c.Close()
	if err := c.PingContext(pctx); err != nil {
		// pgsql.Retryable counts a timeout as retryable.
		return fmt.Errorf("PostgreSQL 数据库 %s: 连接失败: %w", db, err)
	}
	return nil
}
