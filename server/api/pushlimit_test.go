package api_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/store"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// countingStore is the real store with a count of the pushes inside it.
type countingStore struct {
	api.Store
	in, peak atomic.Int64
}

func (s *countingStore) Push(ctx context.Context, dev store.PushDevice, req *syncproto.PushRequest) (*syncproto.PushResponse, error) {
	n := s.in.Add(1)
	defer s.in.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	return s.Store.Push(ctx, dev, req)
}

// TestPush_MaxPushes: with the writer stalled, at most MaxPushes pushes
// are decoded and inside the store; the others wait with their raw bodies
// and all are applied once the writer moves again, for several limits.
func TestPush_MaxPushes(t *testing.T) {
	servertest.SQLiteOnly(t) // it holds SQLite's file lock to stall the writer
	for _, limit := range []int{1, 3, 8} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			dir := t.TempDir()
			env := servertest.StartWith(t, servertest.Options{Dir: dir})
			cs := &countingStore{Store: env.Store}
			srv, err := api.New(api.Config{Store: cs, MaxPushes: limit, UploadDir: filepath.Join(dir, "uploads2"),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv.Handler())
			defer hs.Close()
			defer srv.Close()

			const devices = 12
			devs := make([]*uploadtest.Device, devices)
			for i := range devs {
				devs[i] = uploadtest.NewDevice(t, env, fmt.Sprintf("limit-worker-%d", i), "G11")
			}

			unlock := holdWriteLock(t, dir)
			defer unlock()

			hhs := make([]string, devices)
			var wg sync.WaitGroup
			statuses := make([]int, devices)
			for i, d := range devs {
				hhs[i] = syncproto.NewID(time.Now())
				body, _ := json.Marshal(syncproto.PushRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: d.ID, Mutations: []syncproto.Mutation{
					{Seq: 1, Kind: syncproto.KindHouseholdCreate, Household: &syncproto.Household{ID: hhs[i], PlaceCode: "G11",
						Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"杨绍华"`)}}},
				}})
				wg.Add(1)
				go func() {
					defer wg.Done()
					for attempt := 0; attempt < 20; attempt++ { // 503 while the lock outlasts the writer's wait: retry, as devices do
						req, _ := http.NewRequest("POST", hs.URL+"/api/v1/sync/push", bytes.NewReader(body))
						req.Header.Set("Authorization", "Bearer "+d.Token)
						req.Header.Set("Content-Type", "application/json")
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							t.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						statuses[i] = resp.StatusCode
						if resp.StatusCode != http.StatusServiceUnavailable {
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}
			// Wait until the limit is reached, and see it hold.
			deadline := time.Now().Add(20 * time.Second)
			for cs.in.Load() < int64(limit) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			if got := cs.peak.Load(); got != int64(limit) {
				t.Errorf("%d pushes inside the store at once with the writer stalled, want %d", got, limit)
			}
			unlock()
			wg.Wait()
			for i, st := range statuses {
				if st != http.StatusOK {
					t.Errorf("device %d: push answered %d", i, st)
				}
			}
			if got := cs.peak.Load(); got > int64(limit) {
				t.Errorf("peak %d pushes inside the store, limit %d", got, limit)
			}
			var n int
			raw := env.RawDB(t)
			for _, hh := range hhs {
				var c int
				if err := raw.QueryRow(`SELECT count(*) FROM households WHERE id = ?`, hh).Scan(&c); err != nil {
					t.Fatal(err)
				}
				n += c
			}
			if n != devices {
				t.Errorf("%d of %d households stored", n, devices)
			}
		})
	}
}

// holdWriteLock takes SQLite's write lock on the database in dir from
// another connection, so that the store's writer waits, until the
// returned function (safe to call twice) lets it go.
func holdWriteLock(t *testing.T, dir string) (unlock func()) {
	t.Helper()
	other, err := sql.Open("sqlite3", sqlstore.DSN(filepath.Join(dir, "fieldsync.db"), false, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
				t.Error(err)
			}
			conn.Close()
			other.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}
