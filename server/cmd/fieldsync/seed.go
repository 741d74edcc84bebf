package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"fieldsync/server/app"
	"fieldsync/server/seed"
)

// runSeed serves `fieldsync seed [-data DIR] [-db DB] [-spec FILE|-] [-out FILE]`:
// it prepares a data folder for measurements and simulations (the demo
// county without photos, extra places, generated households; see
// server/seed) and writes a JSON manifest (the database file, the demo's
// admin account and places, what was imported) to stdout or -out.
// Without -spec it loads the demo county only. On SQLite the server must
// be stopped (the command holds the data folder's lock).
func runSeed(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fieldsync seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	fs.StringVar(&cfg.DataDir, "data", "data", "data folder: SQLite file and local blob folder")
	dbFlag(fs, &cfg.DB)
	specFile := fs.String("spec", "", "JSON file saying what to prepare (server/seed.Spec), - for standard input; empty: the demo county only")
	outFile := fs.String("out", "", "write the manifest to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("seed: unexpected arguments %q", fs.Args())
	}
	spec := seed.Spec{Demo: true}
	if *specFile != "" {
		r := stdin
		if *specFile != "-" {
			f, err := os.Open(*specFile)
			if err != nil {
				return fmt.Errorf("seed: %w", err)
			}
			defer f.Close()
			r = f
		}
		var err error
		if spec, err = seed.ParseSpec(r); err != nil {
			return err
		}
	}
	db, err := app.ParseDB(cfg.DB, cfg.DataDir)
	if err != nil {
		return err
	}
	if !db.IsPostgres() {
		unlock, err := app.LockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	m, err := seed.Run(ctx, st, spec, stderr)
	if err != nil {
		return err
	}
	m.Database = db.SQLitePath
	if db.IsPostgres() {
		m.Database = db.String() // password redacted: the manifest may be shown
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if *outFile != "" {
		return os.WriteFile(*outFile, data, 0o600) // it holds the admin's password
	}
	_, err = stdout.Write(data)
	return err
}
