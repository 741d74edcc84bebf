package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	// database/sql driver "pgx": fieldsim reads a PostgreSQL server's
	// database with plain SQL, as it reads a SQLite file.
	_ "github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL, for servers the simulator starts with -db: it creates a
// fresh database per server (C collation, which fieldsync requires)
// through an admin URL, passes its URL to `fieldsync seed` and
// `fieldsync run`, and reads it with plain SQL through pgx's
// database/sql driver.

// isPostgresURL reports whether a server's database (server.dbPath) is a
// PostgreSQL URL rather than a SQLite file.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// errNoPostgres is returned when a PostgreSQL setup is asked for without
// an admin URL.
var errNoPostgres = errors.New("PostgreSQL needs -db (an admin URL, e.g. postgres://user@127.0.0.1:5432/postgres?sslmode=disable)")

// createPGDatabase creates a fresh database named prefix_RANDOM with C
// collation through the admin URL and returns its URL (the admin URL with
// another database) and a function that drops it.
func createPGDatabase(ctx context.Context, adminURL, prefix string) (string, func(context.Context) error, error) {
	if !isPostgresURL(adminURL) {
		return "", nil, fmt.Errorf("-db %q: %w", redactURL(adminURL), errNoPostgres)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("-db: %w", err)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	// The name is ours (a fixed prefix, lowercase letters, digits and
	// underscores), never a client value; it is quoted anyway.
	name := sanitizeDBName(prefix) + "_" + hex.EncodeToString(rnd[:])
	admin, err := sql.Open("pgx", adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE "`+name+`" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		return "", nil, fmt.Errorf("postgres: create database %s: %w", name, err)
	}
	u.Path = "/" + name
	drop := func(ctx context.Context) error {
		db, err := sql.Open("pgx", adminURL)
		if err != nil {
			return err
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			return fmt.Errorf("postgres: drop database %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// sanitizeDBName keeps lowercase ASCII letters, digits and underscores
// (at most 40).
func sanitizeDBName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "fieldsim"
	}
	return b.String()
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// serverDB is a server's database opened read-only for checks: a SQLite
// file or a PostgreSQL database; q rewrites ? placeholders for it.
type serverDB struct {
	*sql.DB
	pg bool
}

// q turns the ? placeholders of a query into $1, $2, ... on PostgreSQL
// (the checks' queries have no ? inside string literals).
func (db *serverDB) q(query string) string {
	if !db.pg {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
