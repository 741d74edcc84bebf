package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// scenarioDefaults are each scenario's sizes and link when no flag says
// otherwise.
var scenarioDefaults = map[string]struct {
	devices, visits, edits int
	link                   string
	photoBytes, maxPhotos  int
}{
	"county-evening": {devices: 50, visits: 20, edits: 3, link: "none", photoBytes: 250_000},
	// 2g-day: at 50 kbps a 250 KB photo takes 40 s of raw link time, so
	// the day's photos are bounded (-photos 0 sends them all).
	"2g-day":   {devices: 1, visits: 30, edits: 5, link: "2g", photoBytes: 250_000, maxPhotos: 4},
	"reassign": {devices: 1, visits: 3, edits: 1, link: "direct"},
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fieldsim run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runOptions
	var lf linkFlags
	fs.StringVar(&o.Scenario, "scenario", "county-evening", "county-evening, 2g-day or reassign")
	fs.IntVar(&o.Devices, "devices", 0, "devices (default per scenario: county-evening 50, others 1)")
	fs.IntVar(&o.Visits, "visits", -1, "visits per device (default per scenario: 20, 30, 3)")
	fs.IntVar(&o.Edits, "edits", -1, "household edits per device (default per scenario: 3, 5, 1)")
	lf.register(fs, "")
	fs.StringVar(&o.ServerURL, "server", "", "use this running server (http://127.0.0.1:PORT) instead of starting one")
	fs.StringVar(&o.AdminUser, "admin-user", "admin", "admin user of -server")
	fs.StringVar(&o.AdminPassword, "admin-password", "", "admin password of -server (default: the demo password)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the workload and the links")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "bound of the whole run")
	fs.IntVar(&o.MaxSyncs, "max-syncs", 10, "syncs a device tries in one phase before giving up")
	fs.IntVar(&o.SetupWorkers, "setup-workers", 8, "devices enrolled at once")
	fs.StringVar(&o.WorkDir, "dir", "", "keep the server and device folders here (default: a temp folder, removed)")
	var photoFormList string
	fs.IntVar(&o.PhotoBytes, "photo-bytes", -1, "bytes of each JPEG photo (EXIF GPS and time) attached to the required slots of photo forms' visits; 0: no photos (default per scenario: 250000, 250000, 0)")
	fs.StringVar(&photoFormList, "photo-forms", strings.Join(photoForms, ","), "forms whose visits carry photos (comma-separated, or all)")
	fs.IntVar(&o.MaxPhotos, "photos", -1, "at most this many photos per device, 0: no bound (default per scenario: 0, 4, 0)")
	fs.DurationVar(&o.ReqTimeout, "request-timeout", 2*time.Minute, "bound of one device HTTP request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %v", fs.Args())
	}
	def, ok := scenarioDefaults[o.Scenario]
	if !ok {
		return fmt.Errorf("-scenario %q: want county-evening, 2g-day or reassign", o.Scenario)
	}
	if o.Devices <= 0 {
		o.Devices = def.devices
	}
	if o.Visits < 0 {
		o.Visits = def.visits
	}
	if o.Edits < 0 {
		o.Edits = def.edits
	}
	if lf.profile == "" {
		lf.profile = def.link
	}
	link, err := lf.resolve(fs)
	if err != nil {
		return err
	}
	o.Link = link
	if o.PhotoBytes < 0 {
		o.PhotoBytes = def.photoBytes
	}
	if o.MaxPhotos < 0 {
		o.MaxPhotos = def.maxPhotos
	}
	o.PhotoForms = splitList(photoFormList)
	o.Out = stdout
	res, err := runScenario(ctx, o)
	if res != nil {
		printResult(stdout, res)
	}
	return err
}
