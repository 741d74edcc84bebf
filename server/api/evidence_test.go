package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/jpeg"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// evField is a server with field workers in G11 (village V1) and G21
// (village V2), a household each, and supervisors of V1 and V2.
type evField struct {
	env          *servertest.Env
	w1, w2       *uploadtest.Device
	hh1, hh2     string
	sup1, sup2   string // session tokens
	cl1          *uploadtest.Client
	worker1Login string
}

func newEvField(t *testing.T) *evField {
	t.Helper()
	env := servertest.Start(t)
	f := &evField{env: env, hh1: syncproto.NewID(time.Now()), hh2: syncproto.NewID(time.Now())}
	f.w1 = uploadtest.NewDevice(t, env, "worker1", "G11")
	f.w2 = uploadtest.NewDevice(t, env, "worker2", "G21")
	uploadtest.Household(t, env, f.hh1, "G11")
	uploadtest.Household(t, env, f.hh2, "G21")
	f.cl1 = &uploadtest.Client{Base: env.URL, Token: f.w1.Token}
	f.sup1 = evLogin(t, env, "sup-v1", domain.RoleSupervisor, "V1")
	f.sup2 = evLogin(t, env, "sup-v2", domain.RoleSupervisor, "V2")
	f.worker1Login = evLogin(t, env, "worker1-web", domain.RoleFieldWorker, "G11")
	return f
}

func evLogin(t *testing.T, env *servertest.Env, name string, role domain.Role, places ...string) string {
	t.Helper()
	env.CreateUserWithPassword(t, name, role, "pw-"+name, places...)
	tok, err := env.API.Login(context.Background(), name, "pw-"+name)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// upload sends data through the tus endpoint as w1.
func (f *evField) upload(t *testing.T, data []byte) {
	t.Helper()
	resp, err := f.cl1.Create(t.Context(), data, nil)
	if err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v", err, resp)
	}
	if resp.Offset() == int64(len(data)) {
		return // present already
	}
	p, err := f.cl1.Patch(t.Context(), resp.Header.Get("Location"), 0, data, nil)
	if err != nil || p.Status != http.StatusNoContent || p.Offset() != int64(len(data)) {
		t.Fatalf("PATCH: %v %+v", err, p)
	}
}

type got struct {
	status int
	header http.Header
	body   []byte
}

func fetch(t *testing.T, env *servertest.Env, method, path, token string, hdr map[string]string) got {
	t.Helper()
	req, _ := http.NewRequest(method, env.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent gzip
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return got{resp.StatusCode, resp.Header, b}
}

func errCode(b []byte) syncproto.Code {
	var e syncproto.Error
	_ = json.Unmarshal(b, &e)
	return e.Code
}

func TestEvidence_Missing(t *testing.T) {
	f := newEvField(t)
	a, b := []byte("photo a "+strings.Repeat("x", 1000)), []byte("photo b "+strings.Repeat("y", 1000))
	f.w1.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), f.hh1, uploadtest.Ref(a, "progress"), uploadtest.Ref(b, "progress")))
	f.upload(t, a)
	c := uploadtest.Sum([]byte("never referenced"))
	tests := []struct {
		name   string
		token  string
		body   any
		status int
		code   syncproto.Code
		want   []string
	}{
		{"present ones are left out, order kept, duplicates dropped", f.w1.Token,
			map[string]any{"protocol_version": 1, "sha256": []string{uploadtest.Sum(b), uploadtest.Sum(a), c, uploadtest.Sum(b)}},
			200, "", []string{uploadtest.Sum(b), c}},
		{"another village's device is not told it exists", f.w2.Token, map[string]any{"protocol_version": 1, "sha256": []string{uploadtest.Sum(a)}}, 200, "", []string{uploadtest.Sum(a)}},
		{"empty list", f.w1.Token, map[string]any{"protocol_version": 1, "sha256": []string{}}, 200, "", []string{}},
		{"not a sha256", f.w1.Token, map[string]any{"protocol_version": 1, "sha256": []string{"ABC"}}, 422, syncproto.CodeValidation, nil},
		{"upper case", f.w1.Token, map[string]any{"protocol_version": 1, "sha256": []string{strings.ToUpper(c)}}, 422, syncproto.CodeValidation, nil},
		{"too many", f.w1.Token, map[string]any{"protocol_version": 1, "sha256": make([]string, api.MaxMissingQuery+1)}, 413, syncproto.CodeTooLarge, nil},
		{"no version", f.w1.Token, map[string]any{"sha256": []string{c}}, 426, syncproto.CodeUnsupportedVersion, nil},
		{"future version", f.w1.Token, map[string]any{"protocol_version": 99, "sha256": []string{c}}, 426, syncproto.CodeUnsupportedVersion, nil},
		{"not JSON", f.w1.Token, "{", 400, syncproto.CodeInvalidJSON, nil},
		{"no token", "", map[string]any{"protocol_version": 1, "sha256": []string{c}}, 401, syncproto.CodeUnauthorized, nil},
		{"a user session is not a device", f.sup1, map[string]any{"protocol_version": 1, "sha256": []string{c}}, 401, syncproto.CodeUnauthorized, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			var st int
			if s, ok := tt.body.(string); ok {
				req, _ := http.NewRequest(http.MethodPost, f.env.URL+"/api/v1/evidence/missing", strings.NewReader(s))
				req.Header.Set("Authorization", "Bearer "+tt.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				st = resp.StatusCode
			} else {
				st = uploadtest.DoJSON(t, f.env.URL, tt.token, http.MethodPost, "/api/v1/evidence/missing", tt.body, &raw)
			}
			if st != tt.status {
				t.Fatalf("status %d, want %d: %s", st, tt.status, raw)
			}
			if tt.code != "" {
				if c := errCode(raw); c != tt.code {
					t.Fatalf("code %q, want %q", c, tt.code)
				}
				return
			}
			var resp api.MissingResponse
			if err := json.Unmarshal(raw, &resp); err != nil || resp.ProtocolVersion != 1 || strings.Join(resp.Missing, ",") != strings.Join(tt.want, ",") || resp.Missing == nil {
				t.Errorf("got %s, want %v", raw, tt.want)
			}
		})
	}
}

func TestEvidence_DownloadAndThumbnailScope(t *testing.T) {
	f := newEvField(t)
	photo := evidencetest.JPEG(evidencetest.Photo{Seed: 5, Width: 800, Height: 600, Orientation: 6})
	text := []byte("meeting minutes, not an image " + strings.Repeat("。", 500))
	visit := syncproto.NewID(time.Now())
	textRef := uploadtest.Ref(text, "progress")
	textRef.MediaType = "text/plain"
	f.w1.PushVisit(t, uploadtest.Visit(visit, f.hh1, uploadtest.Ref(photo, "progress"), textRef))
	f.upload(t, photo)
	f.upload(t, text)
	sum := uploadtest.Sum(photo)
	path := "/api/v1/evidence/" + sum
	admin := f.env.AdminToken

	for _, tc := range []struct {
		who    string
		token  string
		status int
	}{
		{"the device that pushed it", f.w1.Token, 200},
		{"a device of another village", f.w2.Token, 404},
		{"the village supervisor", f.sup1, 200},
		{"another village's supervisor", f.sup2, 404},
		{"a field worker signed in on the web", f.worker1Login, 200},
		{"an admin", admin, 200},
		{"nobody", "", 401},
	} {
		t.Run(tc.who, func(t *testing.T) {
			g := fetch(t, f.env, http.MethodGet, path, tc.token, nil)
			if g.status != tc.status {
				t.Fatalf("download: %d, want %d", g.status, tc.status)
			}
			th := fetch(t, f.env, http.MethodGet, path+"/thumb", tc.token, nil)
			if th.status != tc.status {
				t.Fatalf("thumb: %d, want %d", th.status, tc.status)
			}
			if tc.status == 404 && (errCode(g.body) != syncproto.CodeNotFound || strings.Contains(string(g.body), "scope")) {
				t.Errorf("404 body %s", g.body)
			}
			if tc.status != 200 {
				return
			}
			if !bytes.Equal(g.body, photo) || g.header.Get("Content-Type") != "image/jpeg" || g.header.Get("X-Content-Type-Options") != "nosniff" ||
				g.header.Get("ETag") != `"`+sum+`"` || g.header.Get("Content-Disposition") != "" {
				t.Errorf("download: %d bytes, headers %v", len(g.body), g.header)
			}
			img, err := jpeg.Decode(bytes.NewReader(th.body))
			if err != nil || img.Bounds().Dx() != 192 || img.Bounds().Dy() != 256 || th.header.Get("Content-Type") != "image/jpeg" {
				t.Errorf("thumb: %v %v %v", err, img.Bounds(), th.header)
			}
		})
	}

	// The thumbnail was made once and is kept in the blob store.
	blobs, err := localblob.New(filepath.Join(f.env.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := blobs.OpenDerived(t.Context(), evidence.ThumbName(sum, 256))
	if err != nil {
		t.Fatalf("cached thumbnail: %v", err)
	}
	r.Close()

	tests := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		check  func(t *testing.T, g got)
	}{
		{"range", path, map[string]string{"Range": "bytes=10-19"}, 206, func(t *testing.T, g got) {
			if !bytes.Equal(g.body, photo[10:20]) || g.header.Get("Content-Range") != "bytes 10-19/"+itoa(len(photo)) {
				t.Errorf("range body %q, headers %v", g.body, g.header)
			}
		}},
		{"suffix range", path, map[string]string{"Range": "bytes=-5"}, 206, func(t *testing.T, g got) {
			if !bytes.Equal(g.body, photo[len(photo)-5:]) {
				t.Errorf("suffix range %q", g.body)
			}
		}},
		{"unsatisfiable range", path, map[string]string{"Range": "bytes=99999999-"}, 416, nil},
		{"etag", path, map[string]string{"If-None-Match": `"` + sum + `"`}, 304, nil},
		{"gzip asked for: the blob is sent as is", path, map[string]string{"Accept-Encoding": "gzip"}, 200, func(t *testing.T, g got) {
			if g.header.Get("Content-Encoding") != "" || !bytes.Equal(g.body, photo) || g.header.Get("Content-Length") != itoa(len(photo)) {
				t.Errorf("gzip: encoding %q, %d bytes, length %q", g.header.Get("Content-Encoding"), len(g.body), g.header.Get("Content-Length"))
			}
		}},
		{"gzip and range", path, map[string]string{"Accept-Encoding": "gzip", "Range": "bytes=0-3"}, 206, func(t *testing.T, g got) {
			if !bytes.Equal(g.body, photo[:4]) {
				t.Errorf("body %q", g.body)
			}
		}},
		{"a text blob downloads as an attachment", "/api/v1/evidence/" + uploadtest.Sum(text), nil, 200, func(t *testing.T, g got) {
			if !bytes.Equal(g.body, text) || !strings.HasPrefix(g.header.Get("Content-Type"), "text/plain") ||
				!strings.HasPrefix(g.header.Get("Content-Disposition"), "attachment") || !strings.Contains(g.header.Get("Content-Security-Policy"), "sandbox") {
				t.Errorf("text: %v", g.header)
			}
		}},
		{"no thumbnail of text", "/api/v1/evidence/" + uploadtest.Sum(text) + "/thumb", nil, 415, nil},
		{"unknown blob", "/api/v1/evidence/" + uploadtest.Sum([]byte("nope")), nil, 404, nil},
		{"not a hash", "/api/v1/evidence/..%2f..%2fetc", nil, 404, nil},
		{"referenced but not uploaded", "/api/v1/evidence/" + uploadtest.Sum([]byte("later")), nil, 404, nil},
		{"future protocol", path, map[string]string{"Fieldsync-Protocol": "99"}, 426, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := fetch(t, f.env, http.MethodGet, tt.path, f.w1.Token, tt.hdr)
			if g.status != tt.status {
				t.Fatalf("status %d, want %d: %.200s", g.status, tt.status, g.body)
			}
			if tt.check != nil {
				tt.check(t, g)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestEvidence_VisitEvidence(t *testing.T) {
	f := newEvField(t)
	near := evidencetest.JPEG(evidencetest.Photo{Seed: 31, GPS: &[2]float64{103.1502, 25.1501},
		Taken: time.Date(2026, 3, 1, 9, 0, 0, 0, time.FixedZone("", 8*3600)), TakenOffset: true})
	far := evidencetest.JPEG(evidencetest.Photo{Seed: 32, GPS: &[2]float64{103.19, 25.19}})
	missing := []byte("not uploaded yet")
	id := syncproto.NewID(time.Now())
	v := uploadtest.Visit(id, f.hh1, uploadtest.Ref(near, "progress"), uploadtest.Ref(far, "progress"), uploadtest.Ref(missing, "progress"))
	v.AccuracyM = 45 // worse than the form's 30 m
	f.w1.PushVisit(t, v)
	f.upload(t, near)
	f.upload(t, far)
	// The checks run after the uploads are answered.
	if err := f.env.API.Uploads().WaitAnalysed(context.Background()); err != nil {
		t.Fatal(err)
	}

	var rep evidence.VisitReport
	if st := uploadtest.DoJSON(t, f.env.URL, f.sup1, http.MethodGet, "/api/v1/visits/"+id+"/evidence", nil, &rep); st != 200 {
		t.Fatalf("status %d", st)
	}
	if rep.VisitID != id || rep.HouseholdID != f.hh1 || rep.PlaceCode != "G11" || !rep.Complete || len(rep.Evidence) != 3 {
		t.Fatalf("report %+v", rep)
	}
	if len(rep.Slots) != 1 || rep.Slots[0] != (evidence.SlotStatus{Slot: "progress", Label: rep.Slots[0].Label, Need: 1, Referenced: 3, Present: 2}) {
		t.Errorf("slots %+v", rep.Slots)
	}
	flags := map[string]string{}
	for _, it := range rep.Evidence {
		for _, fl := range it.Flags {
			flags[it.SHA256] += fl.Flag + ";"
		}
		switch it.SHA256 {
		case uploadtest.Sum(near):
			if !it.Present || it.Width != 320 || it.GPS == nil || it.TakenAt != "2026-03-01T09:00:00+08:00" || it.MediaType != "image/jpeg" {
				t.Errorf("near item %+v", it)
			}
		case uploadtest.Sum(missing):
			if it.Present || it.StoredAt != nil {
				t.Errorf("missing item %+v", it)
			}
		}
	}
	if flags[uploadtest.Sum(far)] != evidence.FlagGPSFar+";" || flags[uploadtest.Sum(near)] != "" {
		t.Errorf("blob flags %v", flags)
	}
	if len(rep.Flags) != 1 || rep.Flags[0].Flag != evidence.FlagPoorAccuracy {
		t.Errorf("visit flags %+v", rep.Flags)
	}
	// Scope: the device that pushed it sees it; others get 404.
	if st := uploadtest.DoJSON(t, f.env.URL, f.w1.Token, http.MethodGet, "/api/v1/visits/"+id+"/evidence", nil, nil); st != 200 {
		t.Errorf("own device: %d", st)
	}
	for _, tok := range []string{f.w2.Token, f.sup2} {
		if st := uploadtest.DoJSON(t, f.env.URL, tok, http.MethodGet, "/api/v1/visits/"+id+"/evidence", nil, nil); st != 404 {
			t.Errorf("out of scope: %d", st)
		}
	}
	if st := uploadtest.DoJSON(t, f.env.URL, f.sup1, http.MethodGet, "/api/v1/visits/"+syncproto.NewID(time.Now())+"/evidence", nil, nil); st != 404 {
		t.Errorf("unknown visit: %d", st)
	}
}

func TestEvidence_Gaps(t *testing.T) {
	f := newEvField(t)
	photo := func(seed uint64) []byte {
		return evidencetest.JPEG(evidencetest.Photo{Seed: seed, Width: 64, Height: 48})
	}
	complete, uploaded := syncproto.NewID(time.Now()), photo(41)
	f.w1.PushVisit(t, uploadtest.Visit(complete, f.hh1, uploadtest.Ref(uploaded, "progress")))
	f.upload(t, uploaded)
	waiting := syncproto.NewID(time.Now())
	f.w1.PushVisit(t, uploadtest.Visit(waiting, f.hh1, uploadtest.Ref(photo(42), "progress"), uploadtest.Ref(photo(43), "progress")))
	none := syncproto.NewID(time.Now())
	f.w1.PushVisit(t, uploadtest.Visit(none, f.hh1))
	// A visit corrected by a later one no longer counts; the correction does.
	corrected := syncproto.NewID(time.Now())
	f.w1.PushVisit(t, uploadtest.Visit(corrected, f.hh1))
	correction := syncproto.NewID(time.Now())
	cv := uploadtest.Visit(correction, f.hh1, uploadtest.Ref(photo(44), "progress"))
	cv.CorrectsVisitID = corrected
	f.w1.PushVisit(t, cv)
	v2 := syncproto.NewID(time.Now())
	f.w2.PushVisit(t, uploadtest.Visit(v2, f.hh2))

	get := func(t *testing.T, token, query string, status int) api.GapsResponse {
		t.Helper()
		var resp api.GapsResponse
		if st := uploadtest.DoJSON(t, f.env.URL, token, http.MethodGet, "/api/v1/evidence/gaps"+query, nil, &resp); st != status {
			t.Fatalf("gaps%s: %d, want %d", query, st, status)
		}
		return resp
	}
	ids := func(r api.GapsResponse) string {
		var out []string
		for _, v := range r.Visits {
			out = append(out, v.VisitID)
		}
		return strings.Join(out, ",")
	}
	v1 := get(t, f.sup1, "?place=V1", 200)
	want := map[string]evidence.SlotStatus{
		waiting:    {Slot: "progress", Need: 1, Referenced: 2, Present: 0},
		none:       {Slot: "progress", Need: 1, Referenced: 0, Present: 0},
		correction: {Slot: "progress", Need: 1, Referenced: 1, Present: 0},
	}
	if len(v1.Visits) != len(want) || v1.Truncated || v1.Place != "V1" {
		t.Fatalf("V1 gaps: %s", ids(v1))
	}
	for _, g := range v1.Visits {
		w, ok := want[g.VisitID]
		if !ok || len(g.Missing) != 1 || g.HouseholdID != f.hh1 || g.PlaceCode != "G11" || g.FormID != uploadtest.WaterCellarForm || g.UserName != "worker1" {
			t.Errorf("gap %+v", g)
			continue
		}
		m := g.Missing[0]
		m.Label = ""
		if m != w {
			t.Errorf("visit %s missing %+v, want %+v", g.VisitID, m, w)
		}
	}
	if len(v1.Households) != 1 || v1.Households[0].HouseholdID != f.hh1 || len(v1.Households[0].Visits) != 3 || strings.Join(v1.Households[0].Slots, ",") != "progress" {
		t.Errorf("households %+v", v1.Households)
	}
	// Without a place: the caller's whole scope.
	if r := get(t, f.sup1, "", 200); len(r.Visits) != 3 {
		t.Errorf("own scope: %s", ids(r))
	}
	if r := get(t, f.env.AdminToken, "?place=C1", 200); len(r.Visits) != 4 {
		t.Errorf("admin C1: %s", ids(r))
	}
	if r := get(t, f.env.AdminToken, "?place=G21", 200); ids(r) != v2 {
		t.Errorf("admin G21: %s", ids(r))
	}
	if r := get(t, f.sup1, "?place=V1&limit=2", 200); len(r.Visits) != 2 || !r.Truncated {
		t.Errorf("limit: %s %v", ids(r), r.Truncated)
	}
	get(t, f.sup1, "?place=V2", 404)
	get(t, f.sup1, "?place=NOPE", 404)
	get(t, f.sup1, "?limit=0", 400)
	get(t, f.worker1Login, "?place=G11", 403)
	get(t, f.w1.Token, "?place=G11", 401)

	// Uploading the missing photo completes the visit.
	f.upload(t, photo(44))
	if r := get(t, f.sup1, "?place=V1", 200); len(r.Visits) != 2 {
		t.Errorf("after upload: %s", ids(r))
	}
}

func TestEvidence_RoutesDocumented(t *testing.T) {
	env := servertest.Start(t)
	var doc struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
			Role     string                `json:"x-fieldsync-role"`
		} `json:"paths"`
	}
	if st := uploadtest.DoJSON(t, env.URL, "", http.MethodGet, "/openapi.json", nil, &doc); st != 200 {
		t.Fatal(st)
	}
	for path, methods := range map[string][]string{
		"/api/v1/evidence/missing":        {"post"},
		"/api/v1/evidence/gaps":           {"get"},
		"/api/v1/evidence/{sha256}":       {"get"},
		"/api/v1/evidence/{sha256}/thumb": {"get"},
		"/api/v1/visits/{id}/evidence":    {"get"},
		"/api/v1/uploads/":                {"options", "post"},
		"/api/v1/uploads/{id}":            {"options", "head", "patch", "delete", "post"},
	} {
		for _, m := range methods {
			if _, ok := doc.Paths[path][m]; !ok {
				t.Errorf("%s %s not documented", m, path)
			}
		}
	}
}
