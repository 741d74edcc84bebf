package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/mobileclient/linkproxy"
	"fieldsync/syncproto"
)

// fleet makes simulated devices for one server.
type fleet struct {
	srv   *server
	dir   string // the devices' folders live here
	runID string // makes user names unique on a shared server
	seed  uint64
	// link, when set, routes each device through its own link proxy;
	// nil connects straight to the server.
	link    *linkproxy.Link
	backoff mobileclient.Backoff
	// reqTimeout bounds one HTTP request of a device.
	reqTimeout time.Duration
	// setupWorkers bounds devices enrolled and first-synced at once.
	setupWorkers int
	// maxBatch fixes the devices' push batch (mobileclient
	// Options.MaxBatch); 0 leaves it to adapt, as the library does.
	maxBatch int
}

// device is one simulated tablet: a real mobileclient store in its own
// folder, its own HTTP client and, if the fleet has a link, its own proxy.
type device struct {
	idx    int
	name   string
	userID int64
	place  string // the place it was assigned at creation
	dir    string
	proxy  *linkproxy.Proxy // nil on a direct connection
	hc     *http.Client
	c      *mobileclient.Client
	rng    *rand.Rand
	work   *workload
	// visits are the visits recorded on this device, in order.
	visits []syncproto.Visit
	edits  int
	// photos are the evidence references of its visits' photos;
	// downscaled counts those the library did not keep byte for byte.
	photos     []syncproto.EvidenceRef
	downscaled int
}

// sourceIP is the loopback address a device's connections come from, so
// that the server's per-address limits (enrollment, login) see each device
// on its own, as they would in the field.
func sourceIP(idx int) net.IP {
	return net.IPv4(127, 2, byte(idx/250), byte(idx%250+1))
}

// newDevice creates device idx for an existing user (not yet enrolled).
func (f *fleet) newDevice(idx int, userID int64, place string) (*device, error) {
	d := &device{
		idx: idx, userID: userID, place: place,
		name: fmt.Sprintf("fieldsim-%s-%03d", f.runID, idx),
		dir:  filepath.Join(f.dir, fmt.Sprintf("dev%03d", idx)),
		rng:  rand.New(rand.NewPCG(f.seed, uint64(idx)+1)),
	}
	local := sourceIP(idx)
	serverURL := f.srv.url
	dialer := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: local}}
	if f.link != nil {
		p, err := linkproxy.Start(linkproxy.Config{Upstream: f.srv.addr, LocalIP: local, Link: *f.link, Seed: f.seed*1000 + uint64(idx)})
		if err != nil {
			return nil, err
		}
		d.proxy = p
		serverURL = p.URL()
		dialer.LocalAddr = nil // to the proxy on 127.0.0.1
	}
	if host, _, err := net.SplitHostPort(f.srv.addr); err == nil && net.ParseIP(host).To4() == nil {
		dialer.LocalAddr = nil // an IPv6 loopback server: no IPv4 source
	}
	d.hc = &http.Client{
		Timeout: f.reqTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: 2,
			MaxConnsPerHost:     4,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	c, err := mobileclient.Open(d.dir, serverURL, &mobileclient.Options{HTTPClient: d.hc, AppVersion: "fieldsim", Backoff: f.backoff, MaxBatch: f.maxBatch})
	if err != nil {
		d.close()
		return nil, err
	}
	d.c = c
	return d, nil
}

// close closes the device's store, HTTP connections and proxy.
func (d *device) close() {
	if d.c != nil {
		d.c.Close()
	}
	if d.hc != nil {
		d.hc.CloseIdleConnections()
	}
	if d.proxy != nil {
		d.proxy.Close()
	}
}

// linkStats returns the device's link counters (zero without a proxy).
func (d *device) linkStats() linkproxy.Stats {
	if d.proxy == nil {
		return linkproxy.Stats{}
	}
	return d.proxy.Stats()
}

// enrollAndSync enrolls the device with a fresh code and runs its first
// sync, which brings its places, forms and households.
func (f *fleet) enrollAndSync(ctx context.Context, d *device, maxSyncs int) error {
	code, err := f.srv.admin.enrollmentCode(ctx, d.userID)
	if err != nil {
		return fmt.Errorf("device %d: %w", d.idx, err)
	}
	if err := d.c.Enroll(ctx, code, d.name); err != nil {
		return fmt.Errorf("device %d: enroll: %w", d.idx, err)
	}
	if _, err := syncUntilDone(ctx, d, maxSyncs, false); err != nil {
		return fmt.Errorf("device %d: first sync: %w", d.idx, err)
	}
	return d.loadWorkload()
}

// loadWorkload reads the device's local copy (forms, households) into its
// workload generator.
func (d *device) loadWorkload() error {
	forms, err := d.c.Forms()
	if err != nil {
		return err
	}
	hs, err := d.c.Households("")
	if err != nil {
		return err
	}
	d.work = newWorkload(d.rng, forms, hs)
	return nil
}

// makeFleet creates one user and one device per place in places (cycling),
// n devices in all, enrolls them and runs their first sync, at most
// f.setupWorkers at once.
func (f *fleet) makeFleet(ctx context.Context, n int, places []string, maxSyncs int) ([]*device, error) {
	if len(places) == 0 {
		return nil, errors.New("no places to assign devices to")
	}
	if err := os.MkdirAll(f.dir, 0o750); err != nil {
		return nil, err
	}
	devs := make([]*device, n)
	for i := 0; i < n; i++ {
		place := places[i%len(places)]
		u, err := f.srv.admin.createUser(ctx, fmt.Sprintf("fieldsim_%s_%03d", f.runID, i), "field_worker", []string{place})
		if err != nil {
			closeAll(devs)
			return nil, fmt.Errorf("user for device %d: %w", i, err)
		}
		if devs[i], err = f.newDevice(i, u.ID, place); err != nil {
			closeAll(devs)
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
	}
	err := forEach(ctx, devs, max(1, f.setupWorkers), func(ctx context.Context, d *device) error {
		return f.enrollAndSync(ctx, d, maxSyncs)
	})
	if err != nil {
		closeAll(devs)
		return nil, err
	}
	return devs, nil
}

func closeAll(devs []*device) {
	for _, d := range devs {
		if d != nil {
			d.close()
		}
	}
}

// forEach runs fn for every device, at most workers at once, and returns
// the first error (the others are cancelled).
func forEach(ctx context.Context, devs []*device, workers int, fn func(context.Context, *device) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, d := range devs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, d); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}(d)
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// syncOutcome sums what the syncs of one device did.
type syncOutcome struct {
	Syncs         int
	Pushed        int
	Rejected      int
	Rejections    []mobileclient.Result
	Retries       int
	BytesSent     int64
	BytesReceived int64
	// BlobsUploaded, BlobsPresent and BlobBytesSent are SyncReport's.
	BlobsUploaded, BlobsPresent int
	BlobBytesSent               int64
	Errors                      []string
	Took                        time.Duration
}

func (o *syncOutcome) add(r mobileclient.SyncReport) {
	o.Pushed += r.Pushed
	o.Rejected += r.Rejected
	o.Rejections = append(o.Rejections, r.Rejections...)
	o.Retries += r.Retries
	o.BytesSent += r.BytesSent
	o.BytesReceived += r.BytesReceived
	o.BlobsUploaded += r.BlobsUploaded
	o.BlobsPresent += r.BlobsPresent
	o.BlobBytesSent += r.BlobBytesSent
}

// syncUntilDone runs Sync (or, with pushOnly, Push) until the outbox is
// empty (and, for Sync, every queued photo is on the server) and a sync
// ended without error, at most maxSyncs times. A device whose library gave
// up on a request (ErrUnavailable) simply tries again, as the app would on
// its next sync.
func syncUntilDone(ctx context.Context, d *device, maxSyncs int, pushOnly bool) (syncOutcome, error) {
	step := d.c.Sync
	if pushOnly {
		step = d.c.Push
	}
	return repeatUntilDone(ctx, d, maxSyncs, "syncs", step, func(p mobileclient.PendingInfo) error {
		if p.Mutations == 0 && (pushOnly || p.Uploads == 0) {
			return nil
		}
		return fmt.Errorf("%d mutations and %d photos still pending", p.Mutations, p.Uploads)
	})
}

// uploadUntilDone runs the upload step alone (UploadEvidence, what Sync
// does between push and pull) until no photo waits, at most maxSyncs
// times.
func uploadUntilDone(ctx context.Context, d *device, maxSyncs int) (syncOutcome, error) {
	return repeatUntilDone(ctx, d, maxSyncs, "upload steps", d.c.UploadEvidence, func(p mobileclient.PendingInfo) error {
		if p.Uploads == 0 {
			return nil
		}
		return fmt.Errorf("%d photos still pending", p.Uploads)
	})
}

// repeatUntilDone runs step until it ends without error and left says
// nothing is left (nil), at most times times. An unavailable server or a
// server error is tried again; any other error, and a failed upload, ends
// it.
func repeatUntilDone(ctx context.Context, d *device, times int, what string,
	step func(context.Context) (mobileclient.SyncReport, error), left func(mobileclient.PendingInfo) error) (out syncOutcome, _ error) {
	start := time.Now()
	defer func() { out.Took = time.Since(start) }()
	var lastErr error
	for out.Syncs < times {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out.Syncs++
		rep, err := step(ctx)
		out.add(rep)
		if err != nil {
			lastErr = err
			out.Errors = append(out.Errors, err.Error())
			if errors.Is(err, mobileclient.ErrUnavailable) || errors.Is(err, mobileclient.ErrServer) {
				continue
			}
			return out, err
		}
		p, err := d.c.Pending()
		if err != nil {
			return out, err
		}
		if p.FailedUploads > 0 {
			return out, d.uploadFailure(p.FailedUploads)
		}
		if lastErr = left(p); lastErr == nil {
			return out, nil
		}
	}
	return out, fmt.Errorf("not done after %d %s: %w", times, what, lastErr)
}

// uploadFailure describes the device's failed uploads.
func (d *device) uploadFailure(n int) error {
	why := ""
	if us, err := d.c.Uploads(); err == nil {
		for _, u := range us {
			if u.State == mobileclient.UploadFailed {
				why = u.SHA256[:12] + ": " + u.Error
				break
			}
		}
	}
	return fmt.Errorf("%d photos failed for good (%s)", n, why)
}
