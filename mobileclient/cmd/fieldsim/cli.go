package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

// scenarioDefaults are each scenario's sizes and link when no flag says
// otherwise.
var scenarioDefaults = map[string]struct {
	devices, visits, edits int
	link                   string
}{
	"county-evening": {devices: 50, visits: 20, edits: 3, link: "none"},
	"2g-day":         {devices: 1, visits: 30, edits: 5, link: "2g"},
	"reassign":       {devices: 1, visits: 3, edits: 1, link: "direct"},
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
	fs.IntVar(&o.PhotoBytes, "photo-bytes", 0, "attach JPEG photos of this size to required evidence slots (needs the device evidence API)")
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
	if o.PhotoBytes > 0 && evidenceHook == nil {
		fmt.Fprintln(stdout, "photos: "+errNoEvidence.Error()+"; running without them")
		o.PhotoBytes = 0
	}
	o.Out = stdout
	res, err := runScenario(ctx, o)
	if res != nil {
		printResult(stdout, res)
	}
	return err
}
