package upload_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldsync/server/api"
	"fieldsync/server/blob/s3blob/s3test"
	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// TestUploadThroughput measures uploads of 200 photos of 250 KB by 8
// concurrent uploaders with the same client: our endpoint over the local
// store and over S3, and tusd itself (filestore) when FIELDSYNC_TUSD names
// its binary. It only runs when FIELDSYNC_BENCH=1:
//
//	FIELDSYNC_BENCH=1 FIELDSYNC_TUSD=$(go env GOPATH)/bin/tusd \
//	  bash .ci/test --only 'go test -count=1 -v -run Throughput ./server/upload/'
func TestUploadThroughput(t *testing.T) {
	if os.Getenv("FIELDSYNC_BENCH") == "" {
		t.Skip("set FIELDSYNC_BENCH=1 to measure")
	}
	const (
		files   = 200
		size    = 250_000
		workers = 8
	)
	photos := make([][]byte, files)
	for i := range photos {
		photos[i] = randomBytes(size)
	}
	run := func(t *testing.T, endpoint, token string) {
		t.Helper()
		cl := &uploadtest.Client{Base: endpoint, Token: token, HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}}
		jobs := make(chan []byte)
		errs := make(chan error, files)
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for data := range jobs {
					r, err := cl.Do(context.Background(), http.MethodPost, endpoint+"/", map[string]string{
						"Upload-Length": fmt.Sprint(len(data)), "Upload-Metadata": uploadtest.Meta(data)}, nil)
					if err != nil || r.Status != http.StatusCreated {
						errs <- fmt.Errorf("create: %v %+v", err, r)
						continue
					}
					p, err := cl.Patch(context.Background(), r.Header.Get("Location"), 0, data, nil)
					if err != nil || p.Status != http.StatusNoContent {
						errs <- fmt.Errorf("patch: %v %+v", err, p)
					}
				}
			}()
		}
		for _, p := range photos {
			jobs <- p
		}
		close(jobs)
		wg.Wait()
		d := time.Since(start)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		t.Logf("%d × %d bytes, %d uploaders: %v, %.1f MB/s, %.0f uploads/s", files, size, workers, d.Round(time.Millisecond),
			float64(files*size)/d.Seconds()/1e6, float64(files)/d.Seconds())
	}
	ours := func(t *testing.T, env *servertest.Env) {
		dev := uploadtest.NewDevice(t, env, "bench", "G11")
		hh := syncproto.NewID(time.Now())
		uploadtest.Household(t, env, hh, "G11")
		for i := 0; i < files; i += 50 {
			var refs []syncproto.EvidenceRef
			for _, p := range photos[i : i+50] {
				refs = append(refs, uploadtest.Ref(p, "progress"))
			}
			dev.PushVisit(t, uploadtest.Visit(syncproto.NewID(time.Now()), hh, refs...))
		}
		run(t, env.URL+"/api/v1/uploads", dev.Token)
	}
	t.Run("fieldsync, local store", func(t *testing.T) { ours(t, servertest.Start(t)) })
	t.Run("fieldsync, S3 store", func(t *testing.T) {
		st := s3Store(t, s3test.Config(t))
		ours(t, servertest.StartWith(t, servertest.Options{API: api.Config{Blobs: st}}))
	})
	t.Run("tusd filestore", func(t *testing.T) {
		bin := os.Getenv("FIELDSYNC_TUSD")
		if bin == "" {
			t.Skip("FIELDSYNC_TUSD not set (go install github.com/tus/tusd/v2/cmd/tusd@v2.9.1)")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", fmt.Sprint(port), "-upload-dir", t.TempDir(), "-base-path", "/files/")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		base := fmt.Sprintf("http://127.0.0.1:%d/files", port)
		for i := 0; ; i++ {
			if resp, err := http.Head(base + "/"); err == nil {
				resp.Body.Close()
				break
			}
			if i > 100 {
				t.Fatal("tusd did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
		run(t, strings.TrimSuffix(base, "/"), "")
	})
}
