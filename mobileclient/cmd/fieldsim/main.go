// Command fieldsim is fieldsync's fleet simulator and benchmark.
//
// It runs simulated devices, each a real mobileclient store in its own
// folder with its own HTTP client and, when a link is emulated, its own
// link proxy (mobileclient/linkproxy), against a fieldsync server that it
// starts on a temp folder with the demo county, or against a running
// server given by -server (loopback only).
//
// It starts the server as a subprocess: it builds ./server/cmd/fieldsync
// from this checkout once per run (or uses the binary named by
// $FIELDSIM_FIELDSYNC), prepares the data folder with `fieldsync seed`
// (the demo county, and the benchmark's bulk households), and runs
// `fieldsync run` on it. It imports nothing of the server.
//
//	fieldsim run -scenario county-evening [-devices N] [-visits K] [-edits E] [-link PROFILE] ...
//	fieldsim run -scenario 2g-day [-visits K] ...
//	fieldsim run -scenario reassign ...
//	fieldsim bench [-json FILE] [-only LIST | -skip LIST] ...
//
// Scenarios:
//
//   - county-evening: many devices come online at once after a day
//     offline; reports acknowledged visits/s and p50/p99 sync duration,
//     and checks every visit is on the server exactly once and every
//     photo downloads back whole.
//   - 2g-day: one device's day over a weak link (50 kbps, 800 ms RTT, a
//     cut every 2 minutes); reports the seconds until all visits are
//     acknowledged, then the photos' upload time against the link's raw
//     time for their bytes.
//
// Photos: in county-evening and 2g-day, retrofit inspections and water
// cellar visits carry generated JPEGs (EXIF GPS and time, -photo-bytes,
// default 250 KB; 2g-day at most 4, -photos) through PrepareEvidence and
// RecordVisit, and Sync uploads them.
//   - reassign: a worker moves to another village; checks the device then
//     holds exactly the new village's households.
//
// bench measures the figures of issue 7 in one run and writes them as JSON
// (see bench.go); it installs and runs its peers (tusd, PouchDB) itself.
//
// Every loop is bounded in count and time (-timeout bounds a whole run),
// and only loopback addresses are used.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	removeBuiltBinary()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "fieldsim:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: fieldsim COMMAND [flags]

commands:
  run     -scenario county-evening|2g-day|reassign [flags]   one scenario
  bench   [-json FILE] [flags]                                the issue 7 figures

fieldsim COMMAND -h lists a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
