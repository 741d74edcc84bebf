package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/syncproto"
)

// serverVisit is what the server holds of a visit.
type serverVisit struct {
	ID, HouseholdID, FormID, DeviceID string
}

// openServerDB opens the database of a server the simulator started (as
// its seed manifest names it) with plain SQL: its SQLite file read-only
// (the server may still be running: WAL readers do not block it), or,
// for a PostgreSQL URL, that database through pgx.
func openServerDB(dbPath string) (*serverDB, error) {
	if isPostgresURL(dbPath) {
		db, err := sql.Open("pgx", dbPath)
		if err != nil {
			return nil, err
		}
		return &serverDB{DB: db, pg: true}, nil
	}
	db, err := sql.Open("sqlite3", sqliteDSN(dbPath, true))
	if err != nil {
		return nil, err
	}
	return &serverDB{DB: db}, nil
}

// visitsOnServer reads the visits of the given devices from the server's
// database, keyed by visit id, with how many rows each id has.
func visitsOnServer(ctx context.Context, dbPath string, deviceIDs []string) (map[string]serverVisit, map[string]int, error) {
	db, err := openServerDB(dbPath)
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	byID := map[string]serverVisit{}
	rows := map[string]int{}
	for chunk := range slices.Chunk(deviceIDs, 500) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rs, err := db.QueryContext(ctx, db.q(`SELECT id, household_id, form_id, device_id FROM visits WHERE device_id IN (?`+
			strings.Repeat(",?", len(chunk)-1)+`)`), args...)
		if err != nil {
			return nil, nil, err
		}
		for rs.Next() {
			var v serverVisit
			if err := rs.Scan(&v.ID, &v.HouseholdID, &v.FormID, &v.DeviceID); err != nil {
				rs.Close()
				return nil, nil, err
			}
			byID[v.ID] = v
			rows[v.ID]++
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return nil, nil, err
		}
	}
	return byID, rows, nil
}

// householdsOnServer returns the ids of the live households in places.
func householdsOnServer(ctx context.Context, dbPath string, places map[string]bool) (map[string]bool, error) {
	db, err := openServerDB(dbPath)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rs, err := db.QueryContext(ctx, `SELECT id, place_code FROM households WHERE deleted = 0`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]bool{}
	for rs.Next() {
		var id, place string
		if err := rs.Scan(&id, &place); err != nil {
			return nil, err
		}
		if places[place] {
			out[id] = true
		}
	}
	return out, rs.Err()
}

// deviceID returns the device's server-side id.
func (d *device) deviceID() (string, error) {
	info, err := d.c.Info()
	if err != nil {
		return "", err
	}
	return info.DeviceID, nil
}

// checkVisitsExactlyOnce checks, in the server's database, that every
// visit recorded on the devices is there exactly once, from the device
// that recorded it, for the same household and form, and that the devices
// left nothing else.
func checkVisitsExactlyOnce(ctx context.Context, dbPath string, devs []*device) (int, error) {
	want := map[string]syncproto.Visit{}
	var ids []string
	dev := map[string]string{}
	for _, d := range devs {
		id, err := d.deviceID()
		if err != nil {
			return 0, err
		}
		ids = append(ids, id)
		for _, v := range d.visits {
			want[v.ID] = v
			dev[v.ID] = id
		}
	}
	got, rows, err := visitsOnServer(ctx, dbPath, ids)
	if err != nil {
		return 0, err
	}
	var problems []string
	for id, v := range want {
		s, ok := got[id]
		switch {
		case !ok:
			problems = append(problems, "missing "+id)
		case rows[id] != 1:
			problems = append(problems, fmt.Sprintf("%s stored %d times", id, rows[id]))
		case s.HouseholdID != v.HouseholdID || s.FormID != v.FormID || s.DeviceID != dev[id]:
			problems = append(problems, fmt.Sprintf("%s differs: %+v", id, s))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			problems = append(problems, "unexpected "+id)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("... %d more", len(problems)-10))
		}
		return len(got), fmt.Errorf("visits on the server: %s", strings.Join(problems, "; "))
	}
	return len(got), nil
}

// auditor is a device of a user assigned to given places, used to see
// what the server holds through the sync protocol itself (for a server
// given by URL, whose database the simulator cannot read).
func (f *fleet) auditor(ctx context.Context, idx int, places []string, maxSyncs int) (*device, error) {
	u, err := f.srv.admin.createUser(ctx, fmt.Sprintf("fieldsim_%s_audit%d", f.runID, idx), "field_worker", places)
	if err != nil {
		return nil, err
	}
	d, err := f.newDevice(idx, u.ID, places[0])
	if err != nil {
		return nil, err
	}
	if err := f.enrollAndSync(ctx, d, maxSyncs); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// visitsSeenBy lists the visits in a device's local copy, by id.
func visitsSeenBy(c *mobileclient.Client) (map[string]syncproto.Visit, error) {
	hs, err := c.Households("")
	if err != nil {
		return nil, err
	}
	out := map[string]syncproto.Visit{}
	for _, h := range hs {
		vs, err := c.Visits(h.ID)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			out[v.ID] = v
		}
	}
	return out, nil
}

// checkVisitsThroughAuditor checks through an auditor device that every
// recorded visit reached the server for its household and form.
func checkVisitsThroughAuditor(ctx context.Context, f *fleet, devs []*device, places []string, maxSyncs int) (int, error) {
	a, err := f.auditor(ctx, len(devs)+900, places, maxSyncs)
	if err != nil {
		return 0, fmt.Errorf("auditor: %w", err)
	}
	defer a.close()
	seen, err := visitsSeenBy(a.c)
	if err != nil {
		return 0, err
	}
	n, missing := 0, 0
	for _, d := range devs {
		for _, v := range d.visits {
			s, ok := seen[v.ID]
			if !ok || s.HouseholdID != v.HouseholdID || s.FormID != v.FormID {
				missing++
				continue
			}
			n++
		}
	}
	if missing > 0 {
		return n, fmt.Errorf("auditor sees %d of the recorded visits; %d missing or different", n, missing)
	}
	return n, nil
}

// waitAnalysed polls the evidence of each visit (GET
// /api/v1/visits/{id}/evidence) until none of its photos is missing or
// says analysis_pending: the server answers an upload before it reads the
// photo's EXIF and runs the checks. At most bound.
func waitAnalysed(ctx context.Context, hc *http.Client, base, token string, visitIDs []string, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for _, id := range visitIDs {
		for {
			pending, err := analysisPending(ctx, hc, base, token, id)
			if err != nil {
				return fmt.Errorf("waiting for the analysis of visit %s: %w", id, err)
			}
			if !pending {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for the analysis of visit %s: %w", id, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func analysisPending(ctx context.Context, hc *http.Client, base, token, visitID string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/visits/"+visitID+"/evidence", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET evidence: %s", resp.Status)
	}
	var rep struct {
		Evidence []struct {
			Present         bool `json:"present"`
			AnalysisPending bool `json:"analysis_pending"`
		} `json:"evidence"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return false, err
	}
	for _, it := range rep.Evidence {
		if !it.Present || it.AnalysisPending {
			return true, nil
		}
	}
	return false, nil
}

// verifyBlobs downloads every blob (GET /api/v1/evidence/{sha256}, as the
// admin) and checks that its bytes hash to its sha256 and have its size.
func (a *adminAPI) verifyBlobs(ctx context.Context, refs []syncproto.EvidenceRef, workers int) (int, int64, error) {
	return verifyBlobs(ctx, a.hc, a.base, a.token, refs, workers)
}

// verifyBlobs downloads each blob with the bearer token, workers at once,
// and re-hashes it; it returns how many blobs and bytes it checked.
func verifyBlobs(ctx context.Context, hc *http.Client, base, token string, refs []syncproto.EvidenceRef, workers int) (int, int64, error) {
	seen := map[string]bool{}
	var todo []syncproto.EvidenceRef
	for _, r := range refs {
		if !seen[r.SHA256] {
			seen[r.SHA256] = true
			todo = append(todo, r)
		}
	}
	var (
		mu       sync.Mutex
		problems []string
		total    int64
	)
	jobs := make(chan syncproto.EvidenceRef)
	var wg sync.WaitGroup
	for w := 0; w < max(1, workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				n, err := checkBlob(ctx, hc, base, token, r)
				mu.Lock()
				if err != nil {
					problems = append(problems, r.SHA256[:12]+": "+err.Error())
				}
				total += n
				mu.Unlock()
			}
		}()
	}
	for _, r := range todo {
		if ctx.Err() != nil {
			break
		}
		jobs <- r
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, total, err
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		more := ""
		if len(problems) > 5 {
			more = fmt.Sprintf("; ... %d more", len(problems)-5)
			problems = problems[:5]
		}
		return len(todo) - len(problems), total, fmt.Errorf("%d of %d blobs: %s%s", len(problems), len(todo), strings.Join(problems, "; "), more)
	}
	return len(todo), total, nil
}

func checkBlob(ctx context.Context, hc *http.Client, base, token string, r syncproto.EvidenceRef) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/evidence/"+r.SHA256, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(resp.Body, r.Size+1))
	if err != nil {
		return n, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != r.Size || got != r.SHA256 {
		return n, fmt.Errorf("%d bytes hashing to %s, want %d bytes", n, got[:12], r.Size)
	}
	return n, nil
}
