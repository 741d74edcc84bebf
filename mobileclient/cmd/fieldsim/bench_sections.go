package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"fieldsync/syncproto"
)

// startServer starts a fieldsync subprocess on the demo county for a
// section.
func (b *bench) startServer(ctx context.Context, section string) (*server, error) {
	return b.startLocal(ctx, localOptions{Dir: filepath.Join(b.path(section), "server"), Profile: b.serverProfile(section)})
}

// env makes a fleet factory on srv whose devices live under the section.
func (b *bench) env(ctx context.Context, srv *server, section, tag string, seed uint64) (*env, error) {
	return newEnv(ctx, srv, envOptions{tag: tag, seed: seed, dir: filepath.Join(b.devices, section, "devices-"+tag), setupWorkers: 8}, b.logf)
}

// demoGroups are the groups of the demo village (the ones with
// households), or every group on another server.
func demoGroups(t *placeTree) []string {
	var out []string
	for _, g := range t.level("group") {
		if strings.HasPrefix(g, demoVillageCode) {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return t.level("group")
	}
	return out
}

// herd is a fleet that recorded its visits offline and pushed them all at
// once.
type herd struct {
	devs    []*device
	elapsed time.Duration
	acked   int
	outs    []syncOutcome
}

func (h *herd) close() { closeAll(h.devs) }

// pushHerd sets up n devices (one worker each, over the demo village's
// groups), has each record perDevice visits offline, then times all of
// them pushing at once (batches of 20, the device default) until every
// outbox is empty.
func (b *bench) pushHerd(ctx context.Context, srv *server, section string, n, perDevice, maxBatch int) (*herd, error) {
	e, err := b.env(ctx, srv, section, section, b.o.Seed)
	if err != nil {
		return nil, err
	}
	e.fleet.maxBatch = maxBatch
	b.logf("%d devices enroll and take their places' copy", n)
	b.rss.setPhase("enroll and first sync")
	devs, err := e.fleet.makeFleet(ctx, n, demoGroups(e.tree), b.o.MaxSyncs)
	if err != nil {
		return nil, err
	}
	h := &herd{devs: devs}
	b.logf("recording %d visits offline (%d per device)", n*perDevice, perDevice)
	b.rss.setPhase("offline")
	if err := forEach(ctx, devs, 4*runtime.NumCPU(), func(ctx context.Context, d *device) error {
		return d.record(perDevice, 0)
	}); err != nil {
		h.close()
		return nil, err
	}
	b.logf("all %d devices push at once", n)
	b.rss.setPhase("push")
	stop := func() {}
	if srv.dataDir != "" {
		stop = b.profile(section, srv)
	}
	outs, elapsed, err := herdSync(ctx, devs, b.o.MaxSyncs, true)
	stop()
	h.outs, h.elapsed = outs, elapsed
	if err != nil {
		h.close()
		return nil, err
	}
	res := &runResult{}
	if err := ackCheck(devs, res); err != nil {
		h.close()
		return nil, err
	}
	h.acked = res.Acked
	retries := 0
	var took []time.Duration
	for _, o := range outs {
		retries += o.Retries
		took = append(took, o.Took)
	}
	b.logf("%d visits acknowledged in %v (%d retried requests; one device's push p50 %.0f ms, p99 %.0f ms)",
		h.acked, elapsed.Round(time.Millisecond), retries, ms(percentile(took, 0.5)), ms(percentile(took, 0.99)))
	return h, nil
}

// --- p6: bytes per visit ---

func (b *bench) p6(ctx context.Context) error {
	srv, err := b.startServer(ctx, "p6")
	if err != nil {
		return err
	}
	defer srv.Close()
	e, err := b.env(ctx, srv, "p6", "p6", b.o.Seed)
	if err != nil {
		return err
	}
	d, err := e.oneDevice(ctx, b.o.MaxSyncs)
	if err != nil {
		return err
	}
	defer d.close()
	form, ok := d.work.forms["household_survey"]
	if !ok {
		return errors.New("the household_survey form is not on the device")
	}
	// The visit as recorded in the field: answers, GPS, and references to
	// the photos of the form's required slots (the photos themselves
	// travel apart, so only their references count here).
	d.work.photoBytes = b.o.P4Bytes
	const n = 20
	var visits []syncproto.Visit
	plain := 0
	for i := 0; i < n; i++ {
		h, _ := d.work.household()
		v, _, err := d.work.visitWith(h, form)
		if err != nil {
			return err
		}
		if v.ID, err = d.c.RecordVisit(v); err != nil {
			return err
		}
		visits = append(visits, v)
		js, _ := json.Marshal(v)
		plain += len(js)
	}
	rep, err := d.c.Push(ctx)
	if err != nil {
		return err
	}
	if rep.Pushed != n || rep.Batches != 1 || rep.Retries != 0 || rep.Rejected != 0 {
		return fmt.Errorf("push of %d visits: %d pushed in %d batches, %d retries, %d rejected", n, rep.Pushed, rep.Batches, rep.Retries, rep.Rejected)
	}
	b.rep.P6BytesPerVisit = round(float64(rep.BytesSent) / n)
	b.note("p6_bytes_per_visit", "one real push of 20 household-survey visits (3 evidence refs each), gzip body ÷ 20")
	rng := rand.New(rand.NewPCG(b.o.Seed, 6))
	sum, raw := 0, 0
	var all bytes.Buffer
	for _, v := range visits {
		x := openRosaXML(v, form, uuid4(rng))
		sum += gzipLen(x)
		raw += len(x)
		all.Write(x)
	}
	b.rep.P6OpenRosaBytesPerVisit = round(float64(sum) / n)
	b.note("p6_openrosa_bytes_per_visit", "the same 20 visits as Collect instance XML, each gzipped alone (one submission each)")
	b.info("p6: uncompressed, a visit is %d B of JSON and %d B of OpenRosa XML; the 20 XML instances gzipped together: %d B/visit",
		plain/n, raw/n, gzipLen(all.Bytes())/n)
	return nil
}

// --- f1: the 2G day ---

func (b *bench) f1(ctx context.Context) error {
	srv, err := b.startServer(ctx, "f1")
	if err != nil {
		return err
	}
	defer srv.Close()
	var times []time.Duration
	var ratios []float64
	photos, photoBytes := 0, int64(0)
	for trial := 0; trial < max(1, b.o.F1Trials); trial++ {
		seed := b.o.Seed + uint64(trial)
		e, err := b.env(ctx, srv, "f1", fmt.Sprintf("f%d", trial), seed)
		if err != nil {
			return err
		}
		o := runOptions{Scenario: "2g-day", Devices: 1, Visits: b.o.F1Visits, Edits: b.o.F1Edits, Seed: seed, MaxSyncs: b.o.MaxSyncs,
			PhotoBytes: b.o.F1PhotoBytes, MaxPhotos: b.o.F1Photos}
		o.setDefaults()
		res, err := twoGDay(ctx, e, &o)
		if err != nil {
			return fmt.Errorf("trial %d: %w", trial, err)
		}
		times = append(times, res.Elapsed)
		b.logf("trial %d: all %d visits acknowledged after %.2f s (whole sync %.2f s); %d cuts, %d retried requests, %d body bytes",
			trial, res.Acked, res.Elapsed.Seconds(), res.FullSync.Seconds(), res.LinkStats.Cuts, res.Retries, res.BytesSent+res.BytesReceived)
		if res.PhotoRaw > 0 {
			r := res.PhotoTime.Seconds() / res.PhotoRaw.Seconds()
			ratios = append(ratios, r)
			photos, photoBytes = res.Photos, res.PhotoBytes
			b.logf("trial %d: %d photos (%d B) uploaded in %.2f s, %.2f s of raw link time: %.2f; %s",
				trial, res.Photos, res.PhotoBytes, res.PhotoTime.Seconds(), res.PhotoRaw.Seconds(), r, res.Checks[len(res.Checks)-1])
		}
	}
	b.rep.F12GVisitsS = round(percentile(times, 0.5).Seconds())
	b.note("f1_2g_visits_s", fmt.Sprintf("2g-day, %d visits + %d edits at 50 kbps, 800 ms RTT, a cut every 2 min (seeded phase); median of %d",
		b.o.F1Visits, b.o.F1Edits, len(times)))
	if len(ratios) > 0 {
		b.rep.F12GPhotosRatio = round(median(ratios))
		b.note("f1_2g_photos_ratio", fmt.Sprintf("same runs: after the visits, the upload step for %d photos of %d B (%d B in all): its time ÷ (photo bytes ÷ 6250 B/s); median of %d",
			photos, b.o.F1PhotoBytes, photoBytes, len(ratios)))
	} else {
		b.note("f1_2g_photos_ratio", "not measured: no photos (-f1-photo-bytes 0)")
	}
	return nil
}
