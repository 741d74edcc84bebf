package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"fieldsync/mobileclient/linkproxy"
	"fieldsync/syncproto"
)

// --- p4: uploads ---

func (b *bench) p4(ctx context.Context) error {
	for _, k := range []string{"p4_upload_mb_s_local", "p4_upload_mb_s_s3", "p5_resent_ratio"} {
		b.note(k, "not yet measured: evidence uploads")
	}
	b.logf("p4 local and S3, p5 and f1 photos: not yet measured: evidence uploads")
	// TODO(evidence): when the server's tus endpoint and the device
	// uploader land, measure with the same tusClient and the same photos:
	//   - p4_upload_mb_s_local: an in-process server (local blob store);
	//     endpoint srv.url+"/api/v1/uploads/", header Authorization: Bearer
	//     <device token> (enrollWire gives one); run it in p7's subprocess
	//     too so p7 covers p1 and p4;
	//   - p4_upload_mb_s_s3: the same with app.Config.S3 set from
	//     FIELDSYNC_TEST_S3_* (or a versitygw the bench starts and stops);
	//   - p5_resent_ratio: the same client through a linkproxy with
	//     Link{CutEveryUpBytes: 256 << 10}: tusClient.sent ÷ file bytes;
	//   - f1_2g_photos_ratio: twoGDay with PhotoBytes set (evidenceHook),
	//     photo transfer time ÷ photo bytes / 6250 B/s.
	dir := b.path("p4")
	bin, err := ensureTusd(ctx, b.o.CacheDir, b.logf)
	if err != nil {
		return err
	}
	proc, err := startTusd(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer proc.stop()
	b.logf("tusd on %s; making %d photos of %d bytes", proc.url, b.o.P4Photos, b.o.P4Bytes)
	photos, err := makePhotos(ctx, b.o.P4Photos, b.o.P4Bytes, b.o.Seed)
	if err != nil {
		return err
	}
	// Three rounds, each of fresh uploads of the same photos; the median
	// round counts (a 50 MB round is short enough for noise to matter).
	var rounds []time.Duration
	var rates []float64
	for round := 0; round < 3; round++ {
		tc := newTusClient(proc.url+"/files/", b.o.P4Uploaders)
		mbps, took, err := uploadAll(ctx, tc, photos, b.o.P4Uploaders)
		if err != nil {
			return fmt.Errorf("tusd: %w", err)
		}
		if sent, want := tc.sent.Load(), int64(len(photos))*int64(b.o.P4Bytes); sent != want {
			return fmt.Errorf("tusd: %d body bytes sent for %d bytes of photos on a direct link", sent, want)
		}
		rounds = append(rounds, took)
		rates = append(rates, mbps)
	}
	slices.Sort(rates)
	b.rep.P4UploadMBsTusd = round(rates[len(rates)/2])
	b.note("p4_upload_mb_s_tusd", fmt.Sprintf("%d photos × %d B, %d uploaders, fieldsim's tus client, median of 3 rounds, MB = 10^6 B", len(photos), b.o.P4Bytes, b.o.P4Uploaders))
	b.logf("tusd: rounds of %d photos took %v (%.0f, %.0f, %.0f MB/s)", len(photos), rounds, rates[0], rates[1], rates[2])
	// The peer's figure for p5: the same client through a link that cuts
	// every 256 KiB of upstream bytes.
	px, err := linkproxy.Start(linkproxy.Config{Upstream: strings.TrimPrefix(proc.url, "http://"), Link: linkproxy.Link{CutEveryUpBytes: 256 << 10}})
	if err != nil {
		return err
	}
	defer px.Close()
	cut := newTusClient(px.URL()+"/files/", 1)
	some := photos[:min(len(photos), 40)]
	var fileBytes int64
	for _, p := range some {
		fileBytes += int64(len(p.Data))
		if err := cut.upload(ctx, p.Data, map[string]string{"filename": "p.jpg"}); err != nil {
			return fmt.Errorf("tusd through cuts: %w", err)
		}
	}
	st := px.Stats()
	b.info("p5 peer: tusd, a cut every 256 KiB, %d photos, %d cuts: body bytes the client handed to its socket ÷ file bytes = %.3f; bytes that crossed the link (HTTP included) ÷ file bytes = %.4f",
		len(some), st.Cuts, float64(cut.sent.Load())/float64(fileBytes), float64(st.BytesUp)/float64(fileBytes))
	// Our endpoint gets other bytes for the cut run: it stores a blob
	// once, and would answer a second upload of the same bytes at once.
	cutPhotos, err := makePhotos(ctx, len(some), b.o.P4Bytes, b.o.Seed+1_000_003)
	if err != nil {
		return err
	}
	if err := b.uploadPreview(ctx, photos, cutPhotos); err != nil {
		b.info("p4/p5 preview against our endpoint failed: %v", err)
	}
	return nil
}

func newTusClient(endpoint string, conns int) *tusClient {
	return &tusClient{endpoint: endpoint, hc: &http.Client{Timeout: 2 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: max(2, conns), DisableCompression: true}}}
}

// makePhotos makes n photos of size bytes on all CPUs.
func makePhotos(ctx context.Context, n, size int, seed uint64) ([]Photo, error) {
	out := make([]Photo, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.NumCPU())
	at := time.Date(2024, 11, 28, 10, 0, 0, 0, cst)
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lat, lon := 25.0+float64(i%50)*0.0003, 103.7+float64(i/50)*0.0004
			out[i], errs[i] = NewPhoto(size, lat, lon, at.Add(time.Duration(i)*time.Minute), seed*10_000+uint64(i))
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// uploadPreview measures our own tus endpoint (/api/v1/uploads/, the local
// blob store) with the same client and photos as tusd, and the same client
// through a link cutting every 256 KiB. The endpoint is not committed yet,
// so the figures are printed, not reported (TODO(evidence): move them into
// p4_upload_mb_s_local and p5_resent_ratio once it is).
func (b *bench) uploadPreview(ctx context.Context, photos, cutPhotos []Photo) error {
	srv, err := b.startServer(ctx, "p4", nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	ps, err := srv.admin.places(ctx)
	if err != nil {
		return err
	}
	group := demoGroups(newPlaceTree(ps))[0]
	u, err := srv.admin.createUser(ctx, fmt.Sprintf("fieldsim_p4_%d", time.Now().UnixNano()%1e9), "field_worker", []string{group})
	if err != nil {
		return err
	}
	w, err := enrollWire(ctx, srv, u.ID, 241)
	if err != nil {
		return err
	}
	defer w.close()
	_, hs, forms, err := w.snapshot(ctx, 1000)
	if err != nil {
		return err
	}
	form, ok := syncproto.FormDef{}, false
	for _, f := range forms {
		if f.ID == "household_survey" {
			form, ok = f, true
		}
	}
	if !ok || len(hs) == 0 {
		return errors.New("no household_survey form or no households in the worker's places")
	}
	// The server takes an upload only for a hash a visit of the device
	// references: push visits naming every photo first (3 per visit).
	wl := newWorkload(rand.New(rand.NewPCG(b.o.Seed, 4)), forms, hs)
	slots := []string{"household_register", "id_card", "household_head_signature"}
	all := append(slices.Clone(photos), cutPhotos...)
	clock := &syncproto.Clock{}
	var muts []syncproto.Mutation
	for i := 0; i < len(all); i += len(slots) {
		h, _ := wl.household()
		v, _, err := wl.visitWith(h, form)
		if err != nil {
			return err
		}
		v.ID = syncproto.NewID(time.Now())
		for k, p := range all[i:min(i+len(slots), len(all))] {
			p.Slot = slots[k]
			v.Evidence = append(v.Evidence, p.Ref())
		}
		muts = append(muts, syncproto.Mutation{Seq: int64(len(muts) + 1), Kind: syncproto.KindVisitCreate, HLC: clock.Tick(), Visit: &v})
	}
	for i := 0; i < len(muts); i += 20 {
		resp, err := w.push(ctx, muts[i:min(i+20, len(muts))])
		if err != nil {
			return err
		}
		for _, r := range resp.Results {
			if r.Status != syncproto.StatusApplied {
				return fmt.Errorf("visit naming the photos rejected: %s %s", r.Code, r.Message)
			}
		}
	}
	auth := map[string]string{"Authorization": "Bearer " + w.token}
	tc := newTusClient(srv.url+"/api/v1/uploads/", b.o.P4Uploaders)
	tc.header = auth
	stop := b.profile("p4")
	mbps, took, err := uploadAll(ctx, tc, photos, b.o.P4Uploaders)
	stop()
	if err != nil {
		return fmt.Errorf("our endpoint: %w", err)
	}
	b.info("p4 preview (not in the JSON: the upload endpoint is not committed yet): our endpoint, local store: %.1f MB/s (%d photos in %v)",
		mbps, len(photos), took.Round(time.Millisecond))
	px, err := linkproxy.Start(linkproxy.Config{Upstream: srv.addr, LocalIP: sourceIP(242), Link: linkproxy.Link{CutEveryUpBytes: 256 << 10}})
	if err != nil {
		return err
	}
	defer px.Close()
	cut := newTusClient(px.URL()+"/api/v1/uploads/", 1)
	cut.header = auth
	var fileBytes int64
	for _, p := range cutPhotos {
		fileBytes += int64(len(p.Data))
		if err := cut.upload(ctx, p.Data, map[string]string{"sha256": p.SHA256, "filetype": "image/jpeg"}); err != nil {
			return fmt.Errorf("our endpoint through cuts: %w", err)
		}
	}
	st := px.Stats()
	b.info("p5 preview: our endpoint, a cut every 256 KiB, %d photos, %d cuts: body bytes the client handed to its socket ÷ file bytes = %.3f; bytes that crossed the link (HTTP included) ÷ file bytes = %.4f",
		len(cutPhotos), st.Cuts, float64(cut.sent.Load())/float64(fileBytes), float64(st.BytesUp)/float64(fileBytes))
	return nil
}
