package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

type syncBuffer = servertest.SyncBuffer

// TestPush_ClientCancelLoggedAsCancel: a push whose device hangs up while
// it waits for the writer is logged as a client cancel (499, info), not
// as an ERROR with status 503.
func TestPush_ClientCancelLoggedAsCancel(t *testing.T) {
	servertest.SQLiteOnly(t) // it holds SQLite's file lock to keep a push waiting
	var logs syncBuffer
	dir := t.TempDir()
	env := servertest.StartWith(t, servertest.Options{Dir: dir, API: api.Config{
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}})
	dev := uploadtest.NewDevice(t, env, "cancel-worker", "G11")

	// Another connection holds SQLite's write lock, so the push waits in
	// the writer's queue until the device has given up.
	unlock := holdWriteLock(t, dir)
	hh := syncproto.NewID(time.Now())
	body, _ := json.Marshal(syncproto.PushRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: dev.ID, Mutations: []syncproto.Mutation{
		{Seq: 1, Kind: syncproto.KindHouseholdCreate, Household: &syncproto.Household{ID: hh, PlaceCode: "G11",
			Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"杨绍华"`)}}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", env.URL+"/api/v1/sync/push", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+dev.Token)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("push answered %s while the database was locked", resp.Status)
	}
	time.Sleep(300 * time.Millisecond)
	unlock()

	var line map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for line == nil && time.Now().Before(deadline) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["uri"] == "/api/v1/sync/push" {
				line = m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if line == nil {
		t.Fatalf("no request line for the push; log:\n%s", logs.String())
	}
	if line["level"] != "INFO" || line["status"] != float64(api.StatusClientClosed) || line["client_cancelled"] != true {
		t.Fatalf("cancelled push logged as %v", line)
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("an ERROR was logged for a client cancel:\n%s", logs.String())
	}
}
