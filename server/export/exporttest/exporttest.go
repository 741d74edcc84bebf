// Package exporttest sets up data for export and console tests: the demo
// county in a temporary SQLite store, and fast direct inserts (visits,
// blobs, evidence flags, device health) through a second writer
// connection, for volumes the sync path would take minutes to build.
package exporttest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/app"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/sqlstore/pgsql"
	"fieldsync/syncproto"
)

// Env is a store with the demo county loaded (on PostgreSQL when the
// suite runs there: servertest.Engine; Path is then empty).
type Env struct {
	Dir   string
	Path  string
	Store *sqlstore.Store
	// Raw is a second writer connection for direct inserts.
	Raw *sql.DB
}

var (
	demoOnce  sync.Once
	demoBytes []byte
	demoErr   error
)

// demoDatabase builds the demo database once per test binary (password
// hashing makes it slow, above all under -race) and keeps its bytes.
func demoDatabase() ([]byte, error) {
	demoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fieldsync-demo-")
		if err != nil {
			demoErr = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "fieldsync.db")
		ctx := context.Background()
		st, err := sqlstore.Open(ctx, sqlstore.Config{Path: path})
		if err != nil {
			demoErr = err
			return
		}
		if err := app.LoadDemo(ctx, st, io.Discard); err != nil {
			st.Close()
			demoErr = err
			return
		}
		if _, err := st.DB().Exec(`SELECT 1`); err != nil {
			demoErr = err
		}
		if err := st.Close(); err != nil { // checkpoints the WAL into the file
			demoErr = err
			return
		}
		demoBytes, demoErr = os.ReadFile(path)
	})
	return demoBytes, demoErr
}

// Demo opens a store in a temp dir holding the demo county (a fresh copy
// for every test).
func Demo(t testing.TB) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if servertest.Engine() == "postgres" {
		return demoPostgres(t, dir)
	}
	db, err := demoDatabase()
	if err != nil {
		t.Fatalf("exporttest: demo: %v", err)
	}
	if servertest.Engine() == "postgres" {
		return demoPostgres(t, dir)
	}
	path := filepath.Join(dir, "fieldsync.db")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, sqlstore.Config{Path: path})
	if err != nil {
		t.Fatalf("exporttest: open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	raw, err := sql.Open("sqlite3", sqlstore.DSN(path, false, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	return &Env{Dir: dir, Path: path, Store: st, Raw: raw}
}

var (
	demoPGOnce     sync.Once
	demoPGTemplate string
	demoPGErr      error
)

// demoPostgres is Demo on PostgreSQL: the demo county is loaded once into
// a template database, and each test gets a copy of it (CREATE DATABASE
// ... TEMPLATE, a file copy on the server).
func demoPostgres(t testing.TB, dir string) *Env {
	t.Helper()
	ctx := context.Background()
	demoPGOnce.Do(func() {
		demoPGTemplate, demoPGErr = pgtest.NewTemplate(func(url string) error {
			st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: url})
			if err != nil {
				return err
			}
			if err := app.LoadDemo(ctx, st, io.Discard); err != nil {
				st.Close()
				return err
			}
			return st.Close()
		})
	})
	if demoPGErr != nil {
		t.Fatalf("exporttest: demo on PostgreSQL: %v", demoPGErr)
	}
	url := pgtest.NewDatabaseFrom(t, demoPGTemplate)
	st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: url})
	if err != nil {
		t.Fatalf("exporttest: open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	raw, err := pgsql.Open(url, pgsql.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return &Env{Dir: dir, Store: st, Raw: raw}
}

// Exec runs a statement on the raw connection.
func (e *Env) Exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := e.Raw.Exec(q, args...); err != nil {
		t.Fatalf("exporttest: %s: %v", q, err)
	}
}

// Count runs a count query.
func (e *Env) Count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Store.DB().QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("exporttest: %s: %v", q, err)
	}
	return n
}

// HouseholdRef is a household id with its place.
type HouseholdRef struct {
	ID, PlaceCode, HeadName string
	Lon, Lat                float64
}

// Households lists households under a place prefix (all when "").
func (e *Env) Households(t testing.TB, placePrefix string) []HouseholdRef {
	t.Helper()
	rows, err := e.Store.DB().Query(`SELECT id, place_code, COALESCE(fields ->> 'head_name', ''), COALESCE(lon, 0), COALESCE(lat, 0)
		FROM households WHERE deleted = 0 AND place_code LIKE ? ORDER BY place_code, id`, placePrefix+"%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []HouseholdRef
	for rows.Next() {
		var h HouseholdRef
		if err := rows.Scan(&h.ID, &h.PlaceCode, &h.HeadName, &h.Lon, &h.Lat); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

// UserID returns a user's id.
func (e *Env) UserID(t testing.TB, name string) int64 {
	t.Helper()
	u, err := e.Store.UserByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// SetIDCards gives every n-th household under the place prefix an ID-card
// number (field id_card_no and on its head member), directly in the
// database, and returns them by household id.
func (e *Env) SetIDCards(t testing.TB, placePrefix string, every int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i, h := range e.Households(t, placePrefix) {
		if i%every != 0 {
			continue
		}
		id := IDCard(i)
		var fields string
		if err := e.Raw.QueryRow(`SELECT fields FROM households WHERE id = ?`, h.ID).Scan(&fields); err != nil {
			t.Fatal(err)
		}
		var fs map[string]json.RawMessage
		if err := json.Unmarshal([]byte(fields), &fs); err != nil {
			t.Fatal(err)
		}
		fs["id_card_no"], _ = json.Marshal(id)
		for k, v := range fs {
			if !strings.HasPrefix(k, syncproto.MemberPrefix) {
				continue
			}
			var m syncproto.Member
			if json.Unmarshal(v, &m) == nil && m.Relation == "户主" {
				m.IDCardNo = id
				fs[k], _ = json.Marshal(m)
			}
		}
		b, _ := json.Marshal(fs)
		e.Exec(t, `UPDATE households SET fields = ? WHERE id = ?`, string(b), h.ID)
		out[h.ID] = id
	}
	return out
}

// IDCard makes a valid (checksummed) synthetic ID-card number.
func IDCard(i int) string {
	base := fmt.Sprintf("530102%04d%02d%02d%03d", 1950+i%50, 1+i%12, 1+i%28, i%1000)
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for k := 0; k < 17; k++ {
		sum += int(base[k]-'0') * weights[k]
	}
	return base + string("10X98765432"[sum%11])
}

// BulkVisits inserts n household_survey visits spread over the given
// households, directly (no validation, no change log), in one
// transaction. Every 10th gets a photo reference; every 7th an ID card in
// its answers. It returns how many it inserted.
func (e *Env) BulkVisits(t testing.TB, hs []HouseholdRef, n int, userID int64, start time.Time) int {
	t.Helper()
	tx, err := e.Raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ins, err := tx.Prepare(`INSERT INTO visits(id, household_id, place_code, user_id, form_id, form_version, answers, lon, lat, accuracy_m,
		device_time, server_time, hlc, review_state, content_hash) VALUES (?, ?, ?, ?, 'household_survey', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	defer ins.Close()
	ev, err := tx.Prepare(`INSERT INTO visit_evidence(visit_id, slot, sha256, size, media_type) VALUES (?, 'household_register', ?, 1000, 'image/jpeg')`)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	states := []string{domain.StateSubmitted, domain.StateApproved, domain.StateNeedsRework, domain.StateRejected}
	for i := 0; i < n; i++ {
		h := hs[i%len(hs)]
		at := start.Add(time.Duration(i) * time.Second)
		id := syncproto.NewID(at)
		idc := ""
		if i%7 == 0 {
			idc = fmt.Sprintf(`,"id_card_no":%q`, IDCard(i))
		}
		ans := fmt.Sprintf(`{"head_name":%q,"members_count":%d,"poverty_status":"none","dibao_class":"none","wubao":"no","pension":"yes","medical_insurance":"yes","income_per_capita":%d.5,"notes":"第%d次入户调查"%s}`,
			h.HeadName, 1+i%7, 8000+i%5000, i, idc)
		ts := domain.Timestamp(at)
		if _, err := ins.Exec(id, h.ID, h.PlaceCode, userID, ans, h.Lon, h.Lat, 5+float64(i%40), ts, ts,
			syncproto.HLC{WallMs: at.UnixMilli()}.String(), states[i%len(states)], fmt.Sprintf("bulk%d", i)); err != nil {
			t.Fatalf("exporttest: visit %d: %v", i, err)
		}
		if i%10 == 0 {
			if _, err := ev.Exec(id, fmt.Sprintf("%064x", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return n
}

// AddBlob records a present blob (as the upload path would), with an EXIF
// position when lon/lat are not zero.
func (e *Env) AddBlob(t testing.TB, sha string, lon, lat float64) {
	t.Helper()
	var elon, elat any
	if lon != 0 || lat != 0 {
		elon, elat = lon, lat
	}
	e.Exec(t, `INSERT INTO blobs(sha256, size, media_type, stored_at, exif_lon, exif_lat, exif_time) VALUES (?, 1000, 'image/jpeg', ?, ?, ?, '2024-05-03T10:00:00+08:00') ON CONFLICT DO NOTHING`,
		sha, domain.Timestamp(time.Now()), elon, elat)
	// The links to it count, as if their devices had uploaded it.
	e.Exec(t, `UPDATE visit_evidence SET held = 1 WHERE sha256 = ?`, sha)
}

// AttachEvidence references a blob from a visit's slot (a link that
// counts: its device holds the blob).
func (e *Env) AttachEvidence(t testing.TB, visitID, slot, sha string) {
	t.Helper()
	e.Exec(t, `INSERT INTO visit_evidence(visit_id, slot, sha256, size, media_type, held) VALUES (?, ?, ?, 1000, 'image/jpeg', 1) ON CONFLICT DO NOTHING`, visitID, slot, sha)
}

// AddFlag raises an evidence flag on a visit (sha "" for the visit).
func (e *Env) AddFlag(t testing.TB, visitID, sha, flag, detail string) {
	t.Helper()
	e.Exec(t, `INSERT INTO evidence_flags(visit_id, sha256, flag, detail, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		visitID, sha, flag, detail, domain.Timestamp(time.Now()))
}

// VisitIDs lists visit ids matching a WHERE clause (on table visits v).
func (e *Env) VisitIDs(t testing.TB, where string, args ...any) []string {
	t.Helper()
	rows, err := e.Store.DB().Query(`SELECT v.id FROM visits v WHERE `+where+` ORDER BY v.server_time DESC, v.id`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		out = append(out, id)
	}
	return out
}
