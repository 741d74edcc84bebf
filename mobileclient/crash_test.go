package mobileclient

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/syncproto"
)

// idempotentServer mimics the server's push rules: a sequence number is
// applied once, a repeat answers the stored result, a gap is refused.
type idempotentServer struct {
	mu      sync.Mutex
	t       *testing.T
	lastSeq int64
	bodies  map[int64]string // seq → mutation JSON as first applied
	visits  map[string]int64 // visit id → seq that created it
}

func (s *idempotentServer) handle(f *fakeServer, w http.ResponseWriter, r *http.Request, body []byte) any {
	if r.URL.Path != PushPath {
		return okHandler(f, w, r, body)
	}
	f.mu.Lock()
	req := f.pushes[len(f.pushes)-1]
	f.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if first := req.Mutations[0].Seq; first > s.lastSeq+1 {
		return syncproto.Errorf(syncproto.CodeSequenceGap, "gap").With("expected", s.lastSeq+1)
	}
	resp := &syncproto.PushResponse{ProtocolVersion: 1}
	for _, m := range req.Mutations {
		b, _ := json.Marshal(m)
		if m.Seq <= s.lastSeq {
			if s.bodies[m.Seq] != string(b) {
				s.t.Errorf("seq %d pushed again with another body:\n%s\n%s", m.Seq, s.bodies[m.Seq], b)
			}
		} else {
			s.bodies[m.Seq] = string(b)
			s.lastSeq = m.Seq
			if m.Visit != nil {
				if prev, ok := s.visits[m.Visit.ID]; ok {
					s.t.Errorf("visit %s applied twice (seq %d and %d)", m.Visit.ID, prev, m.Seq)
				}
				s.visits[m.Visit.ID] = m.Seq
			}
		}
		resp.Results = append(resp.Results, syncproto.MutationResult{Seq: m.Seq, Status: syncproto.StatusApplied})
	}
	resp.LastSeq = s.lastSeq
	return resp
}

const crashEnv = "FIELDSYNC_CRASH_CHILD"

// crashChild records visits (printing each id once committed) and syncs,
// until it is killed.
func crashChild(spec string) {
	dir, url, _ := strings.Cut(spec, "|")
	c, err := Open(dir, url, &Options{MaxBatch: 3, Backoff: Backoff{Base: time.Millisecond, Max: time.Millisecond, MaxAttempts: 2}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	hs, err := c.Households("")
	if err != nil || len(hs) == 0 {
		fmt.Fprintln(os.Stderr, "no household", err)
		os.Exit(3)
	}
	for i := 0; ; i++ {
		id, err := c.RecordVisit(surveyVisit(hs[0].ID, "a"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Println(id)
		if i%4 == 3 {
			c.Sync(context.Background())
		}
	}
}

// TestCrash_KillAnywhere kills a process that records and syncs at random
// moments, reopens the database after each kill and checks that nothing
// was lost or duplicated: every visit the process reported is queued or
// answered, sequence numbers have no holes, and in the end the server holds
// each visit exactly once.
func TestCrash_KillAnywhere(t *testing.T) {
	if spec := os.Getenv(crashEnv); spec != "" {
		crashChild(spec)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	srv := &idempotentServer{t: t, bodies: map[int64]string{}, visits: map[string]int64{}}
	f := newFake(t, srv.handle)
	dir := t.TempDir()
	c2 := openTest(t, dir, f.URL, nil)
	ctx := context.Background()
	setMeta(ctx, c2.db, metaDeviceID, "dev-1")
	setMeta(ctx, c2.db, metaToken, "tok-1")
	seed(t, c2, hhOp(newID(), "G11", 1, map[string]json.RawMessage{"head_name": str("a")}))
	c2.Close()

	reported := map[string]bool{}
	for round := 0; round < 6; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash_KillAnywhere$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir+"|"+f.URL)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []string)
		go func() {
			var ids []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if syncproto.ValidID(sc.Text()) {
					ids = append(ids, sc.Text())
				}
			}
			lines <- ids
		}()
		time.Sleep(time.Duration(150+rand.IntN(500)) * time.Millisecond)
		cmd.Process.Kill()
		ids := <-lines
		cmd.Wait()
		if cmd.ProcessState.Exited() {
			t.Fatalf("child: %s", stderr.String())
		}
		for _, id := range ids {
			reported[id] = true
		}
		checkCrashInvariants(t, dir, reported)
	}
	if len(reported) == 0 {
		t.Fatal("child never recorded a visit")
	}
	// Everything reaches the server exactly once.
	c := openTest(t, dir, f.URL, nil)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for id := range reported {
		if _, ok := srv.visits[id]; !ok {
			t.Errorf("visit %s never reached the server", id)
		}
	}
	t.Logf("%d visits over 6 kills, server last seq %d", len(reported), srv.lastSeq)
}

func checkCrashInvariants(t *testing.T, dir string, reported map[string]bool) {
	t.Helper()
	c := openTest(t, dir, "", nil)
	defer c.Close()
	// Sequence numbers: results and outbox together are 1..n without
	// holes or overlap.
	var seqs []int64
	rows, err := c.db.Query(`SELECT seq FROM results UNION ALL SELECT seq FROM outbox ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s int64
		rows.Scan(&s)
		seqs = append(seqs, s)
	}
	rows.Close()
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("sequence numbers have a hole or overlap at %d: %v", i, seqs[max(0, i-2):min(len(seqs), i+3)])
		}
	}
	// Every reported visit is queued or answered, and stored locally.
	known := map[string]bool{}
	rows, err = c.db.Query(`SELECT entity_id FROM results WHERE kind = 'visit.create' UNION ALL SELECT entity_id FROM outbox WHERE kind = 'visit.create'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		if known[id] {
			t.Errorf("visit %s queued twice", id)
		}
		known[id] = true
	}
	rows.Close()
	for id := range reported {
		if !known[id] {
			t.Errorf("reported visit %s lost", id)
		}
	}
	if n, m := count(t, c.db, `SELECT count(*) FROM visits`), len(known); n != m {
		t.Errorf("%d local visits for %d queued or answered", n, m)
	}
}
