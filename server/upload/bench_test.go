package upload_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"fieldsync/server/servertest"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// The upload benchmarks run our endpoint (an in-process server on a
// loopback port, the local blob store in a temporary folder) and, when
// FIELDSYNC_TUSD names its binary, tusd v2's filestore on the same
// machine, round by round in turn so that both see the same load. They
// report MB/s (10^6 bytes) of each and ours ÷ tusd:
//
//	FIELDSYNC_TUSD=$(go env GOPATH)/bin/tusd go test -run '^$' -bench Upload -benchtime 5x ./server/upload/
//
// photos is fieldsim's p4 workload (200 files of 250 KB, 8 concurrent
// uploads, one creation and one PATCH each); big is one file of 64 MiB
// sent in PATCHes of 4 MiB.

// BenchmarkUploadPhotos: 200 × 250 KB by 8 concurrent uploaders.
func BenchmarkUploadPhotos(b *testing.B) {
	benchUpload(b, 200, 250_000, 8, 0)
}

// BenchmarkUploadBig: one 64 MiB file in PATCHes of 4 MiB.
func BenchmarkUploadBig(b *testing.B) {
	benchUpload(b, 1, 64<<20, 1, 4<<20)
}

func benchUpload(b *testing.B, files, size, workers, chunk int) {
	env := servertest.Start(b)
	dev := uploadtest.NewDevice(b, env, "bench", "G11")
	hh := syncproto.NewID(time.Now())
	uploadtest.Household(b, env, hh, "G11")
	ours := uploadtest.Client{Base: env.URL, Token: dev.Token, HTTP: benchHTTP(workers)}
	var tusd *uploadtest.Client
	if bin := os.Getenv("FIELDSYNC_TUSD"); bin != "" {
		tusd = &uploadtest.Client{Base: startTusd(b, bin), HTTP: benchHTTP(workers)}
	}
	rng := rand.NewChaCha8([32]byte{1})
	var oursT, tusdT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		set := make([]benchFile, files)
		for j := range set {
			set[j].data = make([]byte, size)
			_, _ = rng.Read(set[j].data)
			set[j].meta = uploadtest.Meta(set[j].data)
		}
		for j := 0; j < files; j += 50 {
			var refs []syncproto.EvidenceRef
			for _, p := range set[j:min(files, j+50)] {
				refs = append(refs, uploadtest.Ref(p.data, "progress"))
			}
			dev.PushVisit(b, uploadtest.Visit(syncproto.NewID(time.Now()), hh, refs...))
		}
		if tusd != nil && i%2 == 1 { // every other round, tusd goes first
			tusdT += uploadAllBench(b, tusd, tusd.Base+"/files/", set, workers, chunk)
		}
		b.StartTimer()
		oursT += uploadAllBench(b, &ours, env.URL+"/api/v1/uploads/", set, workers, chunk)
		b.StopTimer()
		if tusd != nil && i%2 == 0 {
			tusdT += uploadAllBench(b, tusd, tusd.Base+"/files/", set, workers, chunk)
		}
		b.StartTimer()
	}
	b.StopTimer()
	total := float64(b.N) * float64(files) * float64(size)
	b.SetBytes(int64(files) * int64(size))
	b.ReportMetric(total/oursT.Seconds()/1e6, "ours_MB/s")
	if tusd != nil {
		b.ReportMetric(total/tusdT.Seconds()/1e6, "tusd_MB/s")
		b.ReportMetric(tusdT.Seconds()/oursT.Seconds(), "ours/tusd")
	}
}

func benchHTTP(workers int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, ExpectContinueTimeout: time.Second}}
}

// benchFile is a file to upload and its Upload-Metadata (its hash is
// not the client's time to measure).
type benchFile struct {
	data []byte
	meta string
}

// uploadAllBench uploads every file of set through workers concurrent
// uploads (create, then PATCHes of chunk bytes, 0: one PATCH) and returns
// how long it took.
func uploadAllBench(b *testing.B, cl *uploadtest.Client, collection string, set []benchFile, workers, chunk int) time.Duration {
	ctx := context.Background()
	jobs := make(chan benchFile)
	errs := make(chan error, len(set))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for file := range jobs {
				data := file.data
				r, err := cl.Do(ctx, http.MethodPost, collection, map[string]string{
					"Upload-Length": fmt.Sprint(len(data)), "Upload-Metadata": file.meta}, nil)
				if err != nil || r.Status != http.StatusCreated {
					errs <- fmt.Errorf("create: %v %+v", err, r)
					continue
				}
				loc := r.Header.Get("Location")
				if loc != "" && loc[0] == '/' {
					loc = cl.Base + loc
				}
				for off := 0; off < len(data); {
					end := len(data)
					if chunk > 0 {
						end = min(end, off+chunk)
					}
					p, err := cl.Patch(ctx, loc, int64(off), data[off:end], nil)
					if err != nil || p.Status != http.StatusNoContent || p.Offset() != int64(end) {
						errs <- fmt.Errorf("patch at %d: %v %+v", off, err, p)
						break
					}
					off = end
				}
			}
		}()
	}
	for _, p := range set {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return d
}

// startTusd runs tusd (filestore in a temporary folder) and returns its
// base URL.
func startTusd(b *testing.B, bin string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", fmt.Sprint(port), "-upload-dir", b.TempDir(), "-base-path", "/files/", "-verbose=false")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if resp, err := http.Head(base + "/files/"); err == nil {
			resp.Body.Close()
			return base
		}
		if i > 100 {
			b.Fatal("tusd did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
