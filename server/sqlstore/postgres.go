package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"fieldsync/migrations"
	"fieldsync/server/domain"
	"fieldsync/server/sqlstore/pgsql"
)

// openPostgres opens the writer (one connection, like SQLite's single
// writer: an instance's writes go through its group commit) and the read
// pool on PostgreSQL, and applies the migrations under an advisory lock
// so that instances starting together migrate once.
func openPostgres(ctx context.Context, cfg Config) (w, r *sql.DB, err error) {
	w, err = pgsql.Open(cfg.PostgresURL, pgsql.Options{MaxConns: 1})
	if err != nil {
		return nil, nil, fmt.Errorf("sqlstore: %w", err)
	}
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("sqlstore: connect to PostgreSQL: %w", err)
	}
	if err := checkCollation(ctx, w); err != nil {
		w.Close()
		return nil, nil, err
	}
	if err := migratePostgres(ctx, cfg.PostgresURL); err != nil {
		w.Close()
		return nil, nil, err
	}
	r, err = pgsql.Open(cfg.PostgresURL, pgsql.Options{MaxConns: cfg.Readers + 1, ReadOnly: true})
	if err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("sqlstore: %w", err)
	}
	return w, r, nil
}

// checkCollation refuses a database whose text order is not byte order:
// place paths are compared as prefix ranges and ids page in order, which
// needs the C collation that SQLite uses.
func checkCollation(ctx context.Context, db *sql.DB) error {
	var coll string
	if err := db.QueryRowContext(ctx, `SELECT datcollate FROM pg_database WHERE datname = current_database()`).Scan(&coll); err != nil {
		return fmt.Errorf("sqlstore: database collation: %w", err)
	}
	switch coll {
	case "C", "POSIX", "C.UTF-8", "C.utf8":
		return nil
	}
	return fmt.Errorf("sqlstore: PostgreSQL 数据库排序规则为 %q，fieldsync 需要 C：请用 CREATE DATABASE fieldsync TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' 创建 (the database collation is %q; fieldsync needs C)", coll, coll)
}

// migratePostgres applies the PostgreSQL migrations under the
// migrations' advisory lock (migrations.UpPostgres): a second instance
// waits for the first, then finds nothing left to apply.
func migratePostgres(ctx context.Context, url string) error {
	db, err := pgsql.Open(url, pgsql.Options{MaxConns: 1})
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	defer db.Close()
	applied, err := migrations.UpPostgres(ctx, db, migrations.Postgres, 0)
	if err != nil {
		return fmt.Errorf("sqlstore: %w", err)
	}
	if len(applied) > 0 {
		slog.Info("PostgreSQL 数据库结构已升级", "versions", applied)
	}
	return nil
}

// pgTxActive reports, for a PostgreSQL connection (ok), whether it is
// still inside the group transaction.
func pgTxActive(c *sql.Conn) (active, ok bool) { return pgsql.InTransaction(c) }

// lockWrites makes tx wait for every other writer, on PostgreSQL: each
// write transaction of every instance takes this one row lock first and
// holds it to its commit, so writes commit one after another as on SQLite
// (whose write lock does the same), change seqs follow commit order, and
// a read-modify-write sees no concurrent writer. On SQLite it does
// nothing: the immediate transaction already holds the write lock.
func (s *Store) lockWrites(ctx context.Context, tx *sql.Tx) error {
	if !s.pg {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT seq FROM sync_head WHERE id = 1 FOR UPDATE`); err != nil {
		return fmt.Errorf("write lock: %w: %w", domain.ErrUnavailable, err)
	}
	return nil
}

// uploadLockConns bounds the connections that hold upload locks at once
// (one per upload being written on this instance); a request beyond it
// waits for one, within its deadline.
const uploadLockConns = 32

// LockUpload implements store.Uploads. On PostgreSQL it takes a session
// advisory lock keyed by the upload on a connection of its own, held until
// release: if the instance dies, the server ends the session and the lock
// goes with it. On SQLite there is one instance, whose handler already
// serialises the requests on an upload.
func (s *Store) LockUpload(ctx context.Context, id string) (func(), error) {
	if !s.pg {
		return func() {}, nil
	}
	conn, err := s.locks.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("upload lock: %w: %w", domain.ErrUnavailable, err)
	}
	key := advisoryKey("upload:" + id)
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, key); err != nil {
		discard(conn)
		return nil, fmt.Errorf("upload lock: %w: %w", domain.ErrUnavailable, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(?)`, key); err != nil {
				discard(conn) // ending the session frees the lock
				return
			}
			conn.Close()
		})
	}, nil
}

// discard closes c and keeps its session out of the pool (its locks end
// with it).
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	c.Close()
}

// advisoryKey maps a name to a pg_advisory_lock key (FNV-1a, 64 bits).
func advisoryKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}
