package app

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"fieldsync/server/demo"
	"fieldsync/server/evidence/evidencetest"
)

// openServerDB opens the test server's database (in data) read-only, for
// checks beside the running server, and returns it with a helper that runs
// a count query on it. It is closed when the test ends.
func openServerDB(t *testing.T, data string) (*sql.DB, func(q string, args ...any) int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+DBPath(data)+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := db.QueryRow(q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
}

// enrollment is an enrollment code the admin issued for a demo user.
type enrollment struct {
	Code       string
	QRPayload  string // what the console's QR image encodes
	AdminToken string
	UserID     int64
	Places     []string // the user's place codes
}

// demoEnrollment logs in as the demo admin and issues an enrollment code
// for the demo user username, who must have places.
func demoEnrollment(t *testing.T, base, username string) enrollment {
	t.Helper()
	var login struct{ Token string }
	apiJSON(t, "POST", base+"/api/v1/auth/login", "", map[string]string{"username": "admin", "password": demo.DemoPassword}, &login)
	var users []struct {
		ID         int64
		Username   string
		PlaceCodes []string `json:"place_codes"`
	}
	apiJSON(t, "GET", base+"/api/v1/users", login.Token, nil, &users)
	en := enrollment{AdminToken: login.Token}
	for _, u := range users {
		if u.Username == username {
			en.UserID, en.Places = u.ID, u.PlaceCodes
		}
	}
	if en.UserID == 0 || len(en.Places) == 0 {
		t.Fatalf("no %s with places in %+v", username, users)
	}
	var ec struct {
		Code      string
		QRPayload string `json:"qr_payload"`
	}
	apiJSON(t, "POST", fmt.Sprintf("%s/api/v1/users/%d/enrollment-codes", base, en.UserID), login.Token, map[string]any{}, &ec)
	en.Code, en.QRPayload = ec.Code, ec.QRPayload
	return en
}

// householdsAt returns n households (by id) of the server's that match
// where (SQL from the test, never from a client) and have a position,
// with their positions.
func householdsAt(t *testing.T, db *sql.DB, where string, n int) (ids []string, lons, lats []float64) {
	t.Helper()
	rows, err := db.Query(`SELECT id, lon, lat FROM households WHERE `+where+` AND lon IS NOT NULL ORDER BY id LIMIT ?`, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var lon, lat float64
		if err := rows.Scan(&id, &lon, &lat); err != nil {
			t.Fatal(err)
		}
		ids, lons, lats = append(ids, id), append(lons, lon), append(lats, lat)
	}
	if len(ids) != n {
		t.Fatalf("%d households with a position where %s, want %d", len(ids), where, n)
	}
	return ids, lons, lats
}

// photosAt writes a JPEG per position (w×h, seeds from seed on) with EXIF
// GPS there and a capture time of taken, and returns their paths.
func photosAt(t *testing.T, seed uint64, w, h int, taken time.Time, lons, lats []float64) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i := range lons {
		p := filepath.Join(dir, fmt.Sprintf("photo%d.jpg", i))
		jpg := evidencetest.JPEG(evidencetest.Photo{Seed: seed + uint64(i), Width: w, Height: h, Taken: taken, TakenOffset: true,
			GPSTime: taken.UTC(), GPS: &[2]float64{lons[i], lats[i]}})
		if err := os.WriteFile(p, jpg, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}
