package app

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"fieldsync/server/sqlstore/pgsql"
)

// ErrBadDB is returned for a -db value that names no database fieldsync
// knows.
var ErrBadDB = errors.New("bad -db value")

// Database is where the records live: one SQLite file, or a PostgreSQL
// database that any number of instances share.
type Database struct {
	// SQLitePath is the SQLite file (when PostgresURL is empty).
	SQLitePath string
	// PostgresURL is postgres://user:password@host/db?sslmode=... .
	PostgresURL string
}

// IsPostgres reports whether the database is PostgreSQL.
func (d Database) IsPostgres() bool { return d.PostgresURL != "" }

// String names the database for logs and messages: sqlite:PATH, or the
// URL with its password replaced by xxxxx.
func (d Database) String() string {
	if d.IsPostgres() {
		return RedactURL(d.PostgresURL)
	}
	return "sqlite:" + d.SQLitePath
}

// RedactURL is u with any password replaced by xxxxx (url.URL.Redacted,
// and the password query parameter libpq also accepts). A value that does
// not parse is not echoed at all: it may hold a password.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(无法解析的数据库地址)"
	}
	if q := p.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		p.RawQuery = q.Encode()
	}
	return p.Redacted()
}

// redactErr is err's text with the URL's password (if any) blanked out,
// for errors whose text may quote a connection string.
func (d Database) redactErr(err error) string {
	msg := err.Error()
	if !d.IsPostgres() {
		return msg
	}
	if p, perr := url.Parse(d.PostgresURL); perr == nil {
		if pw, ok := p.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
		if pw := p.Query().Get("password"); pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// ParseDB reads a -db value (FIELDSYNC_DB):
//
//	""                          the default: sqlite:DATADIR/fieldsync.db (DBPath)
//	sqlite:PATH                 that SQLite file (sqlite://PATH too)
//	PATH                        a bare path without a colon: that SQLite file
//	postgres://... postgresql://...
//	                            PostgreSQL (pgx v5 connection URL)
//
// Anything else, e.g. mysql://... or a postgres URL that does not parse,
// is an error wrapping ErrBadDB, in Chinese, that never quotes a URL's
// password.
func ParseDB(value, dataDir string) (Database, error) {
	v := strings.TrimSpace(value)
	switch {
	case v == "":
		if dataDir == "" {
			dataDir = "data"
		}
		return Database{SQLitePath: DBPath(dataDir)}, nil
	case pgsql.IsURL(v):
		u, err := url.Parse(v)
		if err != nil {
			return Database{}, fmt.Errorf("-db：PostgreSQL 地址无法解析（应为 postgres://用户@主机:端口/数据库?sslmode=...）: %w", ErrBadDB)
		}
		if u.Opaque != "" || strings.Trim(u.Path, "/") == "" && u.Query().Get("dbname") == "" && u.Host == "" {
			return Database{}, fmt.Errorf("-db %s：PostgreSQL 地址缺少主机或数据库名（应为 postgres://用户@主机:端口/数据库）: %w", RedactURL(v), ErrBadDB)
		}
		return Database{PostgresURL: v}, nil
	case strings.HasPrefix(v, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(v, "sqlite:"), "//")
		if p == "" {
			return Database{}, fmt.Errorf("-db sqlite: 后面缺少文件路径（例如 sqlite:data/fieldsync.db）: %w", ErrBadDB)
		}
		return Database{SQLitePath: filepath.Clean(p)}, nil
	case !strings.Contains(v, ":"):
		return Database{SQLitePath: filepath.Clean(v)}, nil
	}
	scheme := v[:strings.Index(v, ":")]
	if len(scheme) > 20 || strings.ContainsAny(scheme, "/@ ") {
		scheme = "?"
	}
	return Database{}, fmt.Errorf("-db：不支持的数据库类型 %q；请用 sqlite:文件路径 或 postgres://用户@主机/数据库: %w", scheme, ErrBadDB)
}
