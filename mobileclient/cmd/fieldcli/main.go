// Command fieldcli acts as one fieldsync device from the command line: it
// enrolls, records visits and household edits offline into its own device
// database, and syncs them with the server.
//
//	fieldcli [-dir DIR] enroll -server URL -code CODE [-name N]
//	fieldcli [-dir DIR] places
//	fieldcli [-dir DIR] forms [-template FORM [-version N]]
//	fieldcli [-dir DIR] households [-place CODE] [-q]
//	fieldcli [-dir DIR] visit -household ID -form ID [-version N] -answers JSON [-lon X -lat Y] [-acc M] [-gps-reason TEXT | -accept-no-gps] [-q]
//	fieldcli [-dir DIR] photo -visit ID -slot SLOT -file F [-type MEDIATYPE]
//	fieldcli [-dir DIR] create -place CODE -set field=jsonvalue ... [-q]
//	fieldcli [-dir DIR] edit -household ID -set field=jsonvalue ...
//	fieldcli [-dir DIR] tasks
//	fieldcli [-dir DIR] sync
//	fieldcli [-dir DIR] pending
//
// A -set value that is not valid JSON is taken as a string. -q prints only
// the ids, one a line, for scripts. forms -template prints an answers
// object for the form that passes its validation, to edit and pass to
// visit -answers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/syncproto"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "fieldcli:", err)
		os.Exit(1)
	}
}

const usage = `usage: fieldcli [-dir DIR] COMMAND [flags]

commands:
  enroll      -server URL -code CODE [-name N]
  places
  forms       [-template FORM [-version N]]
  households  [-place CODE] [-q]
  visit       -household ID -form ID [-version N] -answers JSON [-lon X -lat Y] [-acc M] [-gps-reason TEXT | -accept-no-gps] [-q]
  photo       -visit ID -slot SLOT -file F [-type MEDIATYPE]
  create      -place CODE -set field=jsonvalue ... [-q]
  edit        -household ID -set field=jsonvalue ...
  tasks
  sync
  pending

-q prints only ids; forms -template prints an answers JSON to pass to visit -answers.
`

func run(args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("fieldcli", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage); global.PrintDefaults() }
	dir := global.String("dir", defaultDir(), "device data folder (FIELDSYNC_DEVICE_DIR; default: fieldsync/fieldcli in the user's config folder)")
	if err := global.Parse(args); err != nil {
		return err
	}
	if global.NArg() == 0 {
		global.Usage()
		return flag.ErrHelp
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(dir, "dir", *dir, "device data folder")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// device parses the command's flags, runs check (if any) on them, then
	// opens the device database (for server; "" keeps the enrolled one)
	// and runs fn on it.
	device := func(server func() string, check func() error, fn func(c *mobileclient.Client) error) error {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		url := ""
		if server != nil {
			url = server()
		}
		c, err := mobileclient.Open(*dir, url, &mobileclient.Options{AppVersion: "fieldcli"})
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(c)
	}
	switch cmd {
	case "enroll":
		server := fs.String("server", "", "server base URL")
		code := fs.String("code", "", "one-time enrollment code")
		name := fs.String("name", hostname(), "device name")
		return device(func() string { return *server }, func() error {
			if *server == "" || *code == "" {
				return errors.New("enroll: -server and -code are required")
			}
			return nil
		}, func(c *mobileclient.Client) error {
			if err := c.Enroll(ctx, *code, *name); err != nil {
				return err
			}
			info, err := c.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "enrolled as device %s (user %s) at %s\n", info.DeviceID, info.Username, info.ServerURL)
			return nil
		})

	case "places":
		return device(nil, nil, func(c *mobileclient.Client) error {
			ps, err := c.Places()
			if err != nil {
				return err
			}
			for _, p := range ps {
				fmt.Fprintf(stdout, "%s\t%s\t%s\tparent=%s\n", p.Code, p.Level, p.Name, p.ParentCode)
			}
			return nil
		})

	case "households":
		place := fs.String("place", "", "place code (with its descendants); empty for all")
		quiet := fs.Bool("q", false, "print only the household ids")
		return device(nil, nil, func(c *mobileclient.Client) error {
			hs, err := c.Households(*place)
			if err != nil {
				return err
			}
			for _, h := range hs {
				if *quiet {
					fmt.Fprintln(stdout, h.ID)
					continue
				}
				fb, _ := json.Marshal(h.Fields)
				fmt.Fprintf(stdout, "%s\t%s\tv%d\t%s\n", h.ID, h.PlaceCode, h.Version, fb)
			}
			return nil
		})

	case "visit":
		household := fs.String("household", "", "household id")
		form := fs.String("form", "", "form id")
		version := fs.Int("version", 0, "form version (0: newest on the device)")
		answers := fs.String("answers", "{}", "answers as a JSON object")
		lon := fs.Float64("lon", 0, "longitude")
		lat := fs.Float64("lat", 0, "latitude")
		acc := fs.Float64("acc", 0, "GPS accuracy in metres")
		gpsReason := fs.String("gps-reason", "", "why the visit has no GPS fix within the form's accuracy limit (e.g. 山谷里没有信号); records it despite the warning")
		acceptNoGPS := fs.Bool("accept-no-gps", false, "record a visit without a GPS fix within the form's accuracy limit, giving no reason")
		quiet := fs.Bool("q", false, "print only the visit id")
		var v syncproto.Visit
		return device(nil, func() error {
			if *household == "" || *form == "" {
				return errors.New("visit: -household and -form are required")
			}
			v = syncproto.Visit{HouseholdID: *household, FormID: *form, FormVersion: *version, AccuracyM: *acc}
			if err := json.Unmarshal([]byte(*answers), &v.Answers); err != nil {
				return fmt.Errorf("visit: -answers: %w", err)
			}
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if set["lon"] || set["lat"] {
				v.Point = &syncproto.Point{Lon: *lon, Lat: *lat}
			}
			return nil
		}, func(c *mobileclient.Client) error {
			var opts []mobileclient.VisitOption
			if *gpsReason != "" || *acceptNoGPS {
				opts = append(opts, mobileclient.AcceptNoGPS(*gpsReason))
			}
			id, err := c.RecordVisit(v, opts...)
			var w *mobileclient.GPSWarning
			if errors.As(err, &w) {
				fmt.Fprintln(stderr, gpsWarningText(w))
				return fmt.Errorf("visit not recorded: %w", err)
			}
			if err != nil {
				return err
			}
			printID(stdout, *quiet, "queued visit", id)
			return nil
		})

	case "photo":
		visit := fs.String("visit", "", "visit id")
		slot := fs.String("slot", "", "evidence slot of the visit's form")
		file := fs.String("file", "", "file to attach (a JPEG or PNG photo, or a document)")
		mediaType := fs.String("type", "", "media type, e.g. image/jpeg (default: from the file's bytes)")
		return device(nil, func() error {
			if *visit == "" || *slot == "" || *file == "" {
				return errors.New("photo: -visit, -slot and -file are required")
			}
			return nil
		}, func(c *mobileclient.Client) error {
			ref, err := c.AttachEvidence(*visit, *file, *slot, *mediaType)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "queued %s (%s, %d bytes) for visit %s slot %s; the next sync uploads it\n", ref.SHA256, ref.MediaType, ref.Size, *visit, ref.Slot)
			return nil
		})

	case "forms":
		template := fs.String("template", "", "form id: print an answers JSON template for it")
		version := fs.Int("version", 0, "form version for -template (0: newest on the device)")
		return device(nil, nil, func(c *mobileclient.Client) error {
			if *template != "" {
				f, err := c.Form(*template, *version)
				if err != nil {
					return err
				}
				b, err := answersTemplate(f, time.Now())
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "%s\n", b)
				return nil
			}
			forms, err := c.Forms()
			if err != nil {
				return err
			}
			for _, f := range forms {
				fmt.Fprintf(stdout, "%s\tv%d\t%s\n", f.ID, f.Version, f.Title)
			}
			return nil
		})

	case "tasks":
		return device(nil, nil, func(c *mobileclient.Client) error {
			ts, err := c.Tasks()
			if err != nil {
				return err
			}
			for _, t := range ts {
				fmt.Fprintf(stdout, "%s\t%s\t%s\tvisit=%s\thousehold=%s\t%s\n", t.ID, t.Kind, t.State, t.VisitID, t.HouseholdID, t.Reason)
			}
			return nil
		})

	case "create":
		place := fs.String("place", "", "place code")
		sets := setFlag{}
		fs.Var(sets, "set", "field=jsonvalue (repeatable); null removes a field")
		quiet := fs.Bool("q", false, "print only the household id")
		return device(nil, func() error {
			if *place == "" {
				return errors.New("create: -place is required")
			}
			return nil
		}, func(c *mobileclient.Client) error {
			id, err := c.CreateHousehold(*place, sets)
			if err != nil {
				return err
			}
			printID(stdout, *quiet, "queued household", id)
			return nil
		})

	case "edit":
		household := fs.String("household", "", "household id")
		sets := setFlag{}
		fs.Var(sets, "set", "field=jsonvalue (repeatable); null removes a field")
		return device(nil, func() error {
			if *household == "" || len(sets) == 0 {
				return errors.New("edit: -household and at least one -set are required")
			}
			return nil
		}, func(c *mobileclient.Client) error {
			if err := c.UpdateHousehold(*household, sets); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "queued edit of %s (%d field(s))\n", *household, len(sets))
			return nil
		})

	case "sync":
		return device(nil, nil, func(c *mobileclient.Client) error {
			rep, err := c.Sync(ctx)
			printReport(stdout, rep)
			return err
		})

	case "pending":
		return device(nil, nil, func(c *mobileclient.Client) error {
			p, err := c.Pending()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pending mutations: %d (%d bytes)\n", p.Mutations, p.Bytes)
			if !p.OldestAt.IsZero() {
				fmt.Fprintf(stdout, "oldest pending:    %s\n", p.OldestAt.Format("2006-01-02 15:04:05Z07:00"))
			}
			fmt.Fprintf(stdout, "pending uploads:   %d (%d bytes)\n", p.Uploads, p.UploadBytes)
			if !p.LastSyncAt.IsZero() {
				fmt.Fprintf(stdout, "last sync:         %s\n", p.LastSyncAt.Format("2006-01-02 15:04:05Z07:00"))
			}
			rs, err := c.Rejections()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "rejected:          %d\n", len(rs))
			for _, r := range rs {
				fmt.Fprintf(stdout, "  seq %d %s %s: %s: %s\n", r.Seq, r.Kind, r.EntityID, r.Code, r.Message)
			}
			return nil
		})
	}
	global.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

// printID prints an id alone (quiet, for scripts) or after what.
func printID(w io.Writer, quiet bool, what, id string) {
	if quiet {
		fmt.Fprintln(w, id)
		return
	}
	fmt.Fprintf(w, "%s %s\n", what, id)
}

func printReport(w io.Writer, r mobileclient.SyncReport) {
	fmt.Fprintf(w, "pushed %d mutation(s) in %d batch(es): %d applied, %d rejected, %d conflict(s)\n",
		r.Pushed, r.Batches, r.Pushed-r.Rejected, r.Rejected, r.Conflicts)
	fmt.Fprintf(w, "pulled %d op(s) in %d page(s)", r.PulledOps, r.Pages)
	if r.ScopeEntered+r.ScopeLeft+r.Resets > 0 {
		fmt.Fprintf(w, " (scope: +%d -%d, resets %d)", r.ScopeEntered, r.ScopeLeft, r.Resets)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "sent %d bytes, received %d bytes, %d retr(ies)\n", r.BytesSent, r.BytesReceived, r.Retries)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  retried: %s\n", e)
	}
	for _, rj := range r.Rejections {
		fmt.Fprintf(w, "  rejected seq %d %s %s: %s: %s\n", rj.Seq, rj.Kind, rj.EntityID, rj.Code, rj.Message)
	}
}

// setFlag collects -set field=jsonvalue.
type setFlag map[string]json.RawMessage

func (s setFlag) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (s setFlag) Set(v string) error {
	name, val, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want field=jsonvalue, got %q", v)
	}
	if json.Valid([]byte(val)) {
		s[name] = json.RawMessage(val)
	} else {
		b, _ := json.Marshal(val)
		s[name] = b
	}
	return nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "fieldcli"
	}
	return h
}

// defaultDir is where the device keeps its data unless -dir says
// otherwise: $FIELDSYNC_DEVICE_DIR, else fieldsync/fieldcli in the user's
// config folder (~/.config on Linux), never inside the working tree.
func defaultDir() string {
	if d := os.Getenv("FIELDSYNC_DEVICE_DIR"); d != "" {
		return d
	}
	if base, err := os.UserConfigDir(); err == nil {
		return filepath.Join(base, "fieldsync", "fieldcli")
	}
	return "fieldcli-data"
}

// gpsWarningText is the device library's GPS warning for the worker, in
// Chinese, with what to do about it.
func gpsWarningText(w *mobileclient.GPSWarning) string {
	msg := "警告：这次走访没有 GPS 定位。"
	if !w.NoFix {
		msg = fmt.Sprintf("警告：GPS 精度 %.0f 米，差于表单要求的 %.0f 米。", w.AccuracyM, w.LimitM)
	}
	return msg + "这样的走访会被标记，等待审核。请等到定位满足要求后再记录，" +
		"或加上 -gps-reason \"原因\" 说明后记录（例如 -gps-reason \"山谷里没有信号\"；不说明原因用 -accept-no-gps）。"
}
