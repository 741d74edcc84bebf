package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// TestObjectStoreOutage stops the S3 server in the middle of a sync herd
// (FIELDSYNC_OUTAGE_SECONDS, default 60). The fieldsync server stays up and
// keeps acknowledging visits; blob uploads and downloads get 503 with
// Retry-After, never a 500 or a hang; /healthz says degraded. Once the
// store is back every blob completes and verifies.
func TestObjectStoreOutage(t *testing.T) {
	outage := 60 * time.Second
	if v := os.Getenv("FIELDSYNC_OUTAGE_SECONDS"); v != "" {
		n, _ := strconv.Atoi(v)
		outage = time.Duration(n) * time.Second
	}
	s3 := s3test.StartServer(t)
	cfg := s3.Config(t)
	cfg.Timeout = 2 * time.Second
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	blobs, err := s3blob.New(octx, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	env := servertest.StartWith(t, servertest.Options{API: api.Config{Blobs: blobs, HealthChecks: map[string]func(context.Context) error{"blobs": blobs.Check},
		Evidence: api.EvidenceConfig{BlobTimeout: 3 * time.Second}}})
	const devices = 4
	var devs []*uploadtest.Device
	for i := 0; i < devices; i++ {
		devs = append(devs, uploadtest.NewDevice(t, env, fmt.Sprintf("herd%d", i), "V1"))
	}
	hhs := map[*uploadtest.Device]string{}
	for _, d := range devs {
		hh := syncproto.NewID(time.Now())
		uploadtest.Household(t, env, hh, "G11")
		hhs[d] = hh
	}
	// One photo uploaded before the outage, to download during it.
	photo := func() []byte {
		b := make([]byte, 150_000)
		rand.Read(b)
		return b
	}
	before := photo()
	devs[0].PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), hhs[devs[0]], uploadtest.Ref(before, "progress")))
	cl0 := &uploadtest.Client{Base: env.URL, Token: devs[0].Token}
	if r, err := cl0.Create(ctx, before, nil); err != nil || r.Status != http.StatusCreated {
		t.Fatalf("create: %v %+v", err, r)
	} else if p, err := cl0.Patch(ctx, r.Header.Get("Location"), 0, before, nil); err != nil || p.Status != http.StatusNoContent {
		t.Fatalf("patch: %v %+v", err, p)
	}

	s3.Stop()
	outageStart := time.Now()
	var acked, uploads503, other atomic.Int64
	var mu sync.Mutex
	var pending []struct {
		d    *uploadtest.Device
		url  string
		data []byte
	}
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func(d *uploadtest.Device) {
			defer wg.Done()
			cl := &uploadtest.Client{Base: env.URL, Token: d.Token}
			for time.Since(outageStart) < outage {
				data := photo()
				d.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), hhs[d], uploadtest.Ref(data, "progress")))
				acked.Add(1)
				start := time.Now()
				r, err := cl.Create(ctx, data, nil)
				if err != nil {
					t.Errorf("create during outage: %v", err)
					return
				}
				url := r.Header.Get("Location")
				if r.Status == http.StatusCreated {
					p, err := cl.Patch(ctx, url, 0, data, nil)
					if err != nil {
						t.Errorf("patch during outage: %v", err)
						return
					}
					r = p
				}
				if time.Since(start) > 20*time.Second {
					t.Errorf("upload answer took %v: a hang", time.Since(start))
				}
				switch {
				case r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
					uploads503.Add(1)
				case r.Status >= 500:
					t.Errorf("upload during outage: %d %+v", r.Status, r.Error)
					other.Add(1)
				}
				mu.Lock()
				pending = append(pending, struct {
					d    *uploadtest.Device
					url  string
					data []byte
				}{d, url, data})
				mu.Unlock()
				time.Sleep(500 * time.Millisecond)
			}
		}(d)
	}
	// Meanwhile: health is degraded, downloads are 503, not 500.
	time.Sleep(min(outage/2, 5*time.Second))
	resp, err := http.Get(env.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct{ Status string }
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health.Status != "degraded" {
		t.Errorf("healthz during the outage = %q, want degraded", health.Status)
	}
	req, _ := http.NewRequest("GET", env.URL+"/api/v1/evidence/"+uploadtest.Sum(before), nil)
	req.Header.Set("Authorization", "Bearer "+devs[0].Token)
	dl := time.Now()
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || time.Since(dl) > 20*time.Second {
		t.Errorf("download during the outage: %d Retry-After=%q in %v", resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(dl))
	}
	wg.Wait()
	if acked.Load() < devices || uploads503.Load() == 0 {
		t.Fatalf("during the outage: %d visits acknowledged, %d uploads got 503", acked.Load(), uploads503.Load())
	}
	s3.Start()
	// After the store is back every upload completes and verifies.
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range pending {
		cl := &uploadtest.Client{Base: env.URL, Token: p.d.Token}
		for {
			h, err := cl.Head(ctx, p.url)
			if err == nil && h.Status == http.StatusOK && h.Offset() == int64(len(p.data)) {
				break
			}
			if err == nil && h.Status == http.StatusOK {
				if r, err := cl.Patch(ctx, p.url, h.Offset(), p.data[h.Offset():], nil); err == nil && r.Status == http.StatusNoContent {
					continue
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("upload did not complete after the outage: %v %+v", err, h)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if ok, err := env.Store.BlobPresent(ctx, uploadtest.Sum(p.data)); err != nil || !ok {
			t.Fatalf("blob not present after the outage: %v", err)
		}
		r, _, err := blobs.Open(ctx, uploadtest.Sum(p.data))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if uploadtest.Sum(got) != uploadtest.Sum(p.data) {
			t.Fatal("stored blob does not re-hash")
		}
	}
	resp, _ = http.Get(env.URL + "/healthz")
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health.Status != "ok" {
		t.Errorf("healthz after the outage = %q", health.Status)
	}
	t.Logf("outage %v: %d visits acknowledged, %d uploads answered 503+Retry-After, %d blobs completed afterwards", outage, acked.Load(), uploads503.Load(), len(pending))
}
