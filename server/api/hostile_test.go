package api_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"fieldsync/server/api"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// stateOf fingerprints everything a request could change: the row count
// of every table, the change-log head, and the files under the data
// folder's blob and upload directories.
func stateOf(t *testing.T, env *servertest.Env) string {
	t.Helper()
	env.Store.FlushHealth(context.Background())
	tablesQ := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	headQ := `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)`
	if servertest.Engine() == "postgres" {
		tablesQ = `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`
		headQ = `SELECT seq FROM sync_head`
	}
	rows, err := env.Store.DB().Query(tablesQ)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var b strings.Builder
	for _, tb := range tables {
		if tb == "sessions" || tb == "device_sync" {
			continue // logins make sessions; pulls note when a device was seen
		}
		var n int
		env.Store.DB().QueryRow(`SELECT count(*) FROM ` + tb).Scan(&n)
		fmt.Fprintf(&b, "%s=%d ", tb, n)
	}
	var seqs int64
	env.Store.DB().QueryRow(headQ).Scan(&seqs)
	var lastSeq int64
	env.Store.DB().QueryRow(`SELECT COALESCE(sum(last_seq), 0) FROM device_sync`).Scan(&lastSeq)
	fmt.Fprintf(&b, "head=%d devseq=%d ", seqs, lastSeq)
	var files []string
	for _, sub := range []string{"blobs", "uploads"} {
		filepath.Walk(filepath.Join(env.Dir, sub), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				files = append(files, fmt.Sprintf("%s:%d", strings.TrimPrefix(p, env.Dir), info.Size()))
			}
			return nil
		})
	}
	sort.Strings(files)
	b.WriteString(strings.Join(files, ","))
	return b.String()
}

func gzipBomb(t *testing.T, decompressed int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	// Valid JSON so far, as long as it goes: an object key followed by an
	// endless run of whitespace. Only the size limit can stop it.
	zw.Write([]byte(`{"username":`))
	chunk := bytes.Repeat([]byte(" "), 1<<20)
	for i := 0; i < decompressed>>20; i++ {
		zw.Write(chunk)
	}
	zw.Close()
	return buf.Bytes()
}

// hostile is one hostile request: what it sends and the 4xx code it must
// get. Every case must leave the database and the blob store untouched.
type hostile struct {
	name    string
	method  string
	path    string
	auth    string // "admin", "device", "worker", "" (none)
	body    []byte
	headers map[string]string
	status  int
	code    syncproto.Code
}

func TestHostileInput_ClearErrorsAndNoChange(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{})
	env.AddHouseholds(t, syncproto.Household{ID: "01JDZX5Q7R8S9T0V1W2X3Y4Z5A", PlaceCode: "G11", Fields: map[string]json.RawMessage{}})
	worker := env.CreateUserWithPassword(t, "worker", domain.RoleFieldWorker, "worker-pass-1", "V1")
	devID, devToken := env.Device(t, worker.ID)
	otherID, _ := env.Device(t, worker.ID)
	workerToken := login(t, env, "worker", "worker-pass-1")
	// A cursor the device legitimately holds, to forge variants of.
	resp, err := env.Store.Pull(context.Background(), sqlstore.PushDevice{DeviceID: devID, UserID: worker.ID}, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: devID})
	if err != nil {
		t.Fatal(err)
	}
	cursor := resp.Cursor
	otherResp, _ := env.Store.Pull(context.Background(), sqlstore.PushDevice{DeviceID: otherID, UserID: worker.ID}, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: otherID})
	visit := func(extra string) string {
		return `{"seq":1,"kind":"visit.create","hlc":"1764345600000-0001","visit":{"id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5B","household_id":"01JDZX5Q7R8S9T0V1W2X3Y4Z5A","form_id":"water_cellar_progress","form_version":1,"answers":{},"device_time":"2026-11-28T09:00:00Z"` + extra + `}}`
	}
	push := func(muts ...string) []byte {
		return []byte(`{"protocol_version":1,"device_id":"` + devID + `","mutations":[` + strings.Join(muts, ",") + `]}`)
	}
	pull := func(cur string) []byte {
		return []byte(`{"protocol_version":1,"device_id":"` + devID + `","cursor":"` + cur + `"}`)
	}
	fc := func(code, geom string) []byte {
		return []byte(`{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"` + code + `","name":"x","level":"village","parent_code":"T1"},"geometry":` + geom + `}]}`)
	}
	var many []string
	for i := 1; i <= syncproto.MaxPushMutations+1; i++ {
		many = append(many, fmt.Sprintf(`{"seq":%d,"kind":"visit.create"}`, i))
	}
	nested := []byte(strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000))
	huge := bytes.Repeat([]byte(" "), 40<<20)
	gz := map[string]string{"Content-Encoding": "gzip"}
	cases := []hostile{
		// sync
		{"gzip bomb on push", "POST", "/api/v1/sync/push", "device", gzipBomb(t, 64<<20), gz, 413, syncproto.CodeTooLarge},
		{"gzip bomb on login", "POST", "/api/v1/auth/login", "", gzipBomb(t, 64<<20), gz, 413, syncproto.CodeTooLarge},
		{"not gzip but says gzip", "POST", "/api/v1/sync/push", "device", []byte("plain"), gz, 400, syncproto.CodeBadRequest},
		{"truncated gzip", "POST", "/api/v1/sync/push", "device", gzipBomb(t, 1<<20)[:100], gz, 400, ""},
		{"declared length far over limit", "POST", "/api/v1/sync/push", "device", huge, nil, 413, syncproto.CodeTooLarge},
		{"unknown protocol version", "POST", "/api/v1/sync/push", "device", []byte(`{"protocol_version":99,"device_id":"` + devID + `","mutations":[` + visit("") + `]}`), nil, 426, syncproto.CodeUnsupportedVersion},
		{"missing protocol version", "POST", "/api/v1/sync/pull", "device", []byte(`{"device_id":"` + devID + `"}`), nil, 426, syncproto.CodeUnsupportedVersion},
		{"malformed JSON push", "POST", "/api/v1/sync/push", "device", []byte(`{"protocol_version":1,"mutations":[`), nil, 400, syncproto.CodeInvalidJSON},
		{"deeply nested JSON push", "POST", "/api/v1/sync/push", "device", nested, nil, 400, syncproto.CodeInvalidJSON},
		{"deeply nested JSON login", "POST", "/api/v1/auth/login", "", nested, nil, 400, syncproto.CodeInvalidJSON},
		{"oversize batch", "POST", "/api/v1/sync/push", "device", push(many...), nil, 413, syncproto.CodeTooLarge},
		{"empty batch", "POST", "/api/v1/sync/push", "device", push(), nil, 400, syncproto.CodeBadRequest},
		{"sequence gap", "POST", "/api/v1/sync/push", "device", push(strings.Replace(visit(""), `"seq":1`, `"seq":7`, 1)), nil, 409, syncproto.CodeSequenceGap},
		{"negative seq", "POST", "/api/v1/sync/push", "device", push(strings.Replace(visit(""), `"seq":1`, `"seq":-1`, 1)), nil, 400, syncproto.CodeBadRequest},
		{"NaN coordinate is not JSON", "POST", "/api/v1/sync/push", "device", push(visit(`,"point":{"lon":NaN,"lat":1}`)), nil, 400, syncproto.CodeInvalidJSON},
		{"Inf coordinate is not JSON", "POST", "/api/v1/sync/push", "device", push(visit(`,"point":{"lon":Infinity,"lat":1}`)), nil, 400, syncproto.CodeInvalidJSON},
		{"other device's id in body", "POST", "/api/v1/sync/push", "device", []byte(strings.Replace(string(push(visit(""))), devID, otherID, 1)), nil, 403, syncproto.CodeForbidden},
		{"forged cursor", "POST", "/api/v1/sync/pull", "device", pull(cursor[:len(cursor)-4] + "AAAA"), nil, 400, syncproto.CodeInvalidCursor},
		{"foreign cursor (another device)", "POST", "/api/v1/sync/pull", "device", pull(otherResp.Cursor), nil, 400, syncproto.CodeInvalidCursor},
		{"garbage cursor", "POST", "/api/v1/sync/pull", "device", pull("../../etc/passwd"), nil, 400, syncproto.CodeInvalidCursor},
		{"cursor too long", "POST", "/api/v1/sync/pull", "device", pull(strings.Repeat("A", syncproto.MaxCursorLen+1)), nil, 400, syncproto.CodeInvalidCursor},
		{"sync without token", "POST", "/api/v1/sync/push", "", push(visit("")), nil, 401, syncproto.CodeUnauthorized},
		{"sync with a session token", "POST", "/api/v1/sync/pull", "admin", pull(""), nil, 401, syncproto.CodeUnauthorized},
		// places and geometry
		{"self-intersecting polygon", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}`), nil, 422, syncproto.CodeInvalidGeometry},
		{"out-of-range coordinates", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[0,0],[200,0],[200,1],[0,0]]]}`), nil, 422, syncproto.CodeInvalidGeometry},
		{"latitude past the pole", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,91],[0,0]]]}`), nil, 422, syncproto.CodeInvalidGeometry},
		{"NaN in GeoJSON", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[NaN,0],[1,0],[1,1],[NaN,0]]]}`), nil, 400, syncproto.CodeInvalidJSON},
		{"Inf as huge number", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[1e999,0],[1,0],[1,1],[1e999,0]]]}`), nil, 422, syncproto.CodeInvalidGeometry},
		{"unclosed ring", "POST", "/api/v1/places/import", "admin", fc("VX", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}`), nil, 422, syncproto.CodeInvalidGeometry},
		{"path traversal place code", "POST", "/api/v1/places/import", "admin", fc("../../etc", `null`), nil, 422, syncproto.CodeValidation},
		{"place code with NUL", "POST", "/api/v1/places/import", "admin", fc(`a\u0000b`, `null`), nil, 422, syncproto.CodeValidation},
		{"malformed GeoJSON", "POST", "/api/v1/places/import", "admin", []byte(`{"type":"FeatureCollection","features":[{`), nil, 400, syncproto.CodeInvalidJSON},
		{"deeply nested GeoJSON", "POST", "/api/v1/places/import", "admin", nested, nil, 400, syncproto.CodeInvalidJSON},
		{"import body over the limit", "POST", "/api/v1/places/import", "admin", huge, nil, 413, syncproto.CodeTooLarge},
		// admin
		{"path-like username", "POST", "/api/v1/users", "admin", []byte(`{"username":"../root","role":"admin"}`), nil, 422, syncproto.CodeValidation},
		{"duplicate username", "POST", "/api/v1/users", "admin", []byte(`{"username":"worker","role":"admin"}`), nil, 409, syncproto.CodeConflict},
		{"unknown role", "POST", "/api/v1/users", "admin", []byte(`{"username":"x","role":"root"}`), nil, 422, syncproto.CodeValidation},
		{"worker creates admin", "POST", "/api/v1/users", "worker", []byte(`{"username":"x","role":"admin"}`), nil, 403, syncproto.CodeForbidden},
		{"assign unknown place", "PUT", fmt.Sprintf("/api/v1/users/%d/places", worker.ID), "admin", []byte(`{"place_codes":["NOPE"]}`), nil, 404, syncproto.CodeNotFound},
		{"bad user id", "PUT", "/api/v1/users/abc/places", "admin", []byte(`{"place_codes":[]}`), nil, 400, syncproto.CodeBadRequest},
		{"invalid form definition", "POST", "/api/v1/forms", "admin", []byte(`{"id":"../x","title":"t","fields":[]}`), nil, 422, syncproto.CodeValidation},
		{"form with unknown field type", "POST", "/api/v1/forms", "admin", []byte(`{"id":"x1","title":"t","fields":[{"name":"a","type":"script","label":"a"}]}`), nil, 422, syncproto.CodeValidation},
		{"enroll with unknown code", "POST", "/api/v1/devices/enroll", "", []byte(`{"code":"ZZZZ-ZZZZ-ZZZZ"}`), nil, 401, syncproto.CodeUnauthorized},
		{"enroll with huge name", "POST", "/api/v1/devices/enroll", "", []byte(`{"code":"x","name":"` + strings.Repeat("n", 500) + `"}`), nil, 422, syncproto.CodeValidation},
		{"login wrong password", "POST", "/api/v1/auth/login", "", []byte(`{"username":"admin","password":"nope"}`), nil, 401, syncproto.CodeUnauthorized},
		{"review with unknown action", "POST", "/api/v1/visits/01JDZX5Q7R8S9T0V1W2X3Y4Z5Q/review", "admin", []byte(`{"action":"burn"}`), nil, 404, syncproto.CodeNotFound},
		{"resolve unknown conflict", "POST", "/api/v1/conflicts/nope/resolve", "admin", []byte(`{"action":"keep"}`), nil, 404, syncproto.CodeNotFound},
		{"revoke unknown device", "POST", "/api/v1/devices/nope/revoke", "admin", nil, nil, 404, syncproto.CodeNotFound},
		{"unknown route", "GET", "/api/v1/../../etc/passwd", "admin", nil, nil, 404, syncproto.CodeNotFound},
		{"wrong method", "DELETE", "/api/v1/users", "admin", nil, nil, 405, syncproto.CodeMethodNotAllowed},
	}
	tokens := map[string]string{"admin": env.AdminToken, "device": devToken, "worker": workerToken}
	before := stateOf(t, env)
	n := 0
	for _, c := range cases {
		if c.method == "" {
			continue
		}
		n++
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, env.URL+c.path, bytes.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			if tok := tokens[c.auth]; tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			e, err := syncproto.DecodeError(bytes.NewReader(body))
			if err != nil || e.Message == "" {
				t.Fatalf("no {code, message} body: %s", body)
			}
			if c.code != "" && e.Code != c.code {
				t.Fatalf("code %s, want %s: %s", e.Code, c.code, e.Message)
			}
			if after := stateOf(t, env); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	if n < 40 {
		t.Fatalf("only %d hostile cases", n)
	}
	t.Logf("%d hostile cases, state unchanged", n)
}

func FuzzParsePlaces(f *testing.F) {
	f.Add([]byte(`{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"V9","name":"x","level":"village","parent_code":"T1"},"geometry":null}]}`))
	f.Add([]byte(`{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":1},"geometry":{"type":"Point"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		places, err := api.ParsePlaces(bytes.NewReader(data))
		if err != nil {
			if syncproto.CodeOf(err) == syncproto.CodeInternal {
				t.Fatalf("parse error without a code: %v", err)
			}
			return
		}
		for _, p := range places {
			if p.Code == "" {
				t.Fatal("place without code accepted")
			}
		}
	})
}
