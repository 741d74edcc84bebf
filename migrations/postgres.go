package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// PostgresLockKey is the pg_advisory_lock key (one bigint) that
// UpPostgres holds while it migrates, so that instances starting together
// on one database migrate one after another: the first applies what is
// missing, the others then find nothing left to do. It is the ASCII of
// "fsmigrat"; other advisory locks of fieldsync must use other keys.
const PostgresLockKey int64 = 0x66736d6967726174

// unlockTimeout bounds pg_advisory_unlock, which runs even when the
// caller's context has ended.
const unlockTimeout = 10 * time.Second

// UpPostgres is Up for PostgreSQL (db opened with the pgx driver, fsys
// usually Postgres). On one connection of db it takes the session-level
// advisory lock PostgresLockKey, waiting for as long as ctx allows while
// another instance migrates, then applies what is missing exactly as Up
// does, each migration in its own transaction with its row in
// schema_migrations, and releases the lock, also after an error. A
// database with a version this binary does not know gives ErrNewer.
func UpPostgres(ctx context.Context, db *sql.DB, fsys fs.FS, target int) (applied []int, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, PostgresLockKey); err != nil {
		// A wait cut short by ctx may end just as the lock is granted:
		// close the session rather than return it to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return nil, fmt.Errorf("migrations: advisory lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		var released bool
		uerr := conn.QueryRowContext(uctx, `SELECT pg_advisory_unlock($1)`, PostgresLockKey).Scan(&released)
		if uerr == nil && !released {
			uerr = errors.New("lock was not held")
		}
		if uerr != nil {
			// The session may still hold the lock: never hand it back to
			// the pool. Closing it ends the session, which releases it.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			if err == nil {
				err = fmt.Errorf("migrations: advisory unlock: %w", uerr)
			}
		}
	}()
	return up(ctx, conn, postgresDialect, fsys, target)
}
