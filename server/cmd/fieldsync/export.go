package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"fieldsync/server/app"
	"fieldsync/server/domain"
	"fieldsync/server/export"
)

// runExport is "fieldsync export": the console's exports from the command
// line, straight from the data folder, with a progress bar on stderr.
//
//	fieldsync export -format csv|xlsx|geojson -what visits|households
//	    [-place CODE] [-form ID] [-state STATE] [-from DATE] [-to DATE]
//	    [-user NAME] [-mask] [-lang zh|en] -out FILE|-
//
// The export runs as -user (default admin): their places bound it, their
// role decides whether ID-card numbers are masked, and the audit log
// records it under their name.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fieldsync export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "data", "data folder (FIELDSYNC_DATA)")
	var dbValue string
	dbFlag(fs, &dbValue)
	format := fs.String("format", "xlsx", "csv, xlsx or geojson")
	what := fs.String("what", "visits", "visits or households")
	place := fs.String("place", "", "place code: export its subtree (default: everything the user may see)")
	form := fs.String("form", "", "form id (visits only)")
	state := fs.String("state", "", "review state: submitted, approved, needs_rework, rejected (visits only)")
	from := fs.String("from", "", "first day YYYY-MM-DD (visits' server time, inclusive)")
	to := fs.String("to", "", "last day YYYY-MM-DD (inclusive)")
	userName := fs.String("user", "admin", "export as this user (scope, masking, audit)")
	mask := fs.Bool("mask", false, "mask ID-card numbers even if the user's role allows them")
	lang := fs.String("lang", "zh", "column headers: zh or en")
	out := fs.String("out", "", "output file, or - for stdout (required)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	tz := fs.String("tz", app.DefaultTimeZone, "time zone of the exported times (IANA name; ISO 8601 with its offset)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if v, ok := os.LookupEnv("FIELDSYNC_DATA"); ok && !given["data"] {
		*dataDir = v
	}
	if v, ok := os.LookupEnv("FIELDSYNC_DB"); ok && !given["db"] {
		dbValue = v
	}
	if v, ok := os.LookupEnv("FIELDSYNC_TZ"); ok && !given["tz"] {
		*tz = v
	}
	if *out == "" {
		return errors.New("export: -out FILE (or - for stdout) is required")
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return fmt.Errorf("-tz %q: %w", *tz, err)
	}
	req, err := export.ParseRequest(url.Values{"format": {*format}, "what": {*what}, "place": {*place}, "form": {*form},
		"state": {*state}, "from": {*from}, "to": {*to}, "lang": {*lang}, "mask": {fmt.Sprint(*mask)}}, loc)
	if err != nil {
		return err
	}
	db, err := app.ParseDB(dbValue, *dataDir)
	if err != nil {
		return err
	}
	if !db.IsPostgres() {
		if _, err := os.Stat(db.SQLitePath); err != nil {
			return fmt.Errorf("export: no database at %s: %w", db.SQLitePath, err)
		}
	}
	st, err := app.OpenStore(ctx, app.Config{DataDir: *dataDir, DB: dbValue})
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.UserByName(ctx, *userName)
	if err != nil {
		return fmt.Errorf("export: user %s: %w", *userName, err)
	}
	ctx = domain.WithActor(ctx, domain.Actor{UserID: u.ID, Name: u.Username, Session: "cli"})

	var w io.Writer = stdout
	var tmp *os.File
	if *out != "-" {
		dir := filepath.Dir(*out)
		if tmp, err = os.CreateTemp(dir, ".fieldsync-export-*"); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
		w = tmp
	}
	bar := &progressBar{w: stderr, quiet: *quiet}
	res, err := export.Run(ctx, st, w, u, req, export.Options{Location: loc, Source: "cli",
		Total: bar.total, Progress: bar.progress, ProgressEvery: 500})
	bar.done()
	if err != nil {
		if tmp != nil {
			tmp.Close()
		}
		return fmt.Errorf("export: %w", err)
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("export: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := os.Rename(tmp.Name(), *out); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		masked := ""
		if res.Masked {
			masked = ", ID-card numbers masked"
		}
		fmt.Fprintf(stderr, "exported %d %s to %s (%s%s; audit %s)\n", res.Rows, req.What, *out, req.Format, masked, res.ID)
	}
	return nil
}

// progressBar draws "[#####.....]  45%  45000/100000" on one line.
type progressBar struct {
	w     io.Writer
	quiet bool
	n     int
	last  time.Time
	drawn bool
}

func (p *progressBar) total(n int) { p.n = n }

func (p *progressBar) progress(done int) {
	if p.quiet || p.n == 0 || (time.Since(p.last) < 100*time.Millisecond && done < p.n) {
		return
	}
	p.last = time.Now()
	const width = 30
	frac := float64(done) / float64(p.n)
	if frac > 1 {
		frac = 1
	}
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\r[%s%s] %3d%%  %d/%d rows", strings.Repeat("#", fill), strings.Repeat(".", width-fill), int(frac*100), done, p.n)
	p.drawn = true
}

func (p *progressBar) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
