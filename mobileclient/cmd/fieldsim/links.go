package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"fieldsync/mobileclient/linkproxy"
)

// linkProfiles are the named links of -link. "none" connects devices
// straight to the server (no proxy); every other profile gives each device
// its own link proxy.
var linkProfiles = map[string]*linkproxy.Link{
	"none":   nil,
	"direct": {},
	// A fair 3G cell: 1 Mbps down, 384 kbps up, 200 ms round trip.
	"3g": {DownBytesPerSec: linkproxy.Kbps(1000), UpBytesPerSec: linkproxy.Kbps(384), Latency: 100 * time.Millisecond},
	// Issue 7's weak link: 50 kbps, 800 ms round trip, a cut every 2 minutes.
	"2g": {DownBytesPerSec: linkproxy.Kbps(50), UpBytesPerSec: linkproxy.Kbps(50), Latency: 400 * time.Millisecond, CutEvery: 2 * time.Minute},
	// Everything at once on a 3G cell: random cuts about every 64 KB, half
	// of them resets, a 2 s stall every 20 s, and every 5th push answer
	// lost after the server committed it.
	"flaky": {DownBytesPerSec: linkproxy.Kbps(1000), UpBytesPerSec: linkproxy.Kbps(384), Latency: 100 * time.Millisecond,
		CutRandomBytes: 64 << 10, ResetRatio: 0.5, StallEvery: 20 * time.Second, StallFor: 2 * time.Second,
		DropResponseEvery: 5, DropMatch: "POST /api/v1/sync/push"},
}

func profileNames() string {
	var names []string
	for k := range linkProfiles {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// linkFlags are the -link profile and the flags that override its fields.
type linkFlags struct {
	profile               string
	kbps, upKbps          float64
	rtt                   time.Duration
	stallEvery, stallFor  time.Duration
	cutEvery              time.Duration
	cutUpBytes, cutRandom int64
	resetRatio            float64
	dropEvery             int
	dropMatch             string
}

func (l *linkFlags) register(fs *flag.FlagSet, def string) {
	help := "link profile per device: " + profileNames()
	if def == "" {
		help += " (default per scenario: county-evening none, 2g-day 2g, reassign direct)"
	}
	fs.StringVar(&l.profile, "link", def, help)
	fs.Float64Var(&l.kbps, "kbps", 0, "override: bandwidth in kbit/s, both ways (down with -up-kbps)")
	fs.Float64Var(&l.upKbps, "up-kbps", 0, "override: upstream bandwidth in kbit/s")
	fs.DurationVar(&l.rtt, "rtt", 0, "override: round trip time")
	fs.DurationVar(&l.stallEvery, "stall-every", 0, "override: a stall every this long")
	fs.DurationVar(&l.stallFor, "stall-for", 0, "override: how long a stall lasts")
	fs.DurationVar(&l.cutEvery, "cut-every", 0, "override: cut every connection this often")
	fs.Int64Var(&l.cutUpBytes, "cut-up-bytes", 0, "override: cut at every multiple of this many upstream bytes")
	fs.Int64Var(&l.cutRandom, "cut-random-bytes", 0, "override: cut at random byte offsets this far apart on average")
	fs.Float64Var(&l.resetRatio, "reset-ratio", 0, "override: fraction of cuts sent as RST")
	fs.IntVar(&l.dropEvery, "drop-every", 0, "override: drop every Nth answer to a push after the server committed it")
	fs.StringVar(&l.dropMatch, "drop-match", "POST /api/v1/sync/push", "requests whose answers -drop-every counts")
}

// resolve returns the link to use (nil: no proxy).
func (l *linkFlags) resolve(fs *flag.FlagSet) (*linkproxy.Link, error) {
	base, ok := linkProfiles[l.profile]
	if !ok {
		return nil, fmt.Errorf("-link %q: unknown profile (%s)", l.profile, profileNames())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	overrides := false
	for _, n := range []string{"kbps", "up-kbps", "rtt", "stall-every", "stall-for", "cut-every", "cut-up-bytes", "cut-random-bytes", "reset-ratio", "drop-every"} {
		overrides = overrides || set[n]
	}
	if !overrides {
		if base == nil {
			return nil, nil
		}
		cp := *base
		return &cp, nil
	}
	var link linkproxy.Link
	if base != nil {
		link = *base
	}
	if set["kbps"] {
		link.DownBytesPerSec, link.UpBytesPerSec = linkproxy.Kbps(l.kbps), linkproxy.Kbps(l.kbps)
	}
	if set["up-kbps"] {
		link.UpBytesPerSec = linkproxy.Kbps(l.upKbps)
	}
	if set["rtt"] {
		link.Latency = l.rtt / 2
	}
	if set["stall-every"] {
		link.StallEvery = l.stallEvery
	}
	if set["stall-for"] {
		link.StallFor = l.stallFor
	}
	if set["cut-every"] {
		link.CutEvery = l.cutEvery
	}
	if set["cut-up-bytes"] {
		link.CutEveryUpBytes = l.cutUpBytes
	}
	if set["cut-random-bytes"] {
		link.CutRandomBytes = l.cutRandom
	}
	if set["reset-ratio"] {
		link.ResetRatio = l.resetRatio
	}
	if set["drop-every"] {
		link.DropResponseEvery, link.DropMatch = l.dropEvery, l.dropMatch
	}
	if err := link.Validate(); err != nil {
		return nil, err
	}
	return &link, nil
}

func linkName(l *linkproxy.Link) string {
	if l == nil {
		return "none (no proxy)"
	}
	return l.String()
}
