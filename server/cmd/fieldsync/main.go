// Command fieldsync runs the fieldsync server.
//
//	fieldsync [run] [flags]     serve (the default)
//	fieldsync migrate [flags]   apply database migrations and exit
//	fieldsync demo [flags]      load the demo county and exit
//	fieldsync export [flags]    export visits or households (CSV, XLSX, GeoJSON)
//	fieldsync backup [flags] -out FILE | -to-object-store
//	                            write a consistent snapshot while the server runs
//	fieldsync restore [flags] -from FILE | -from-object-store NAME
//	                            replace the database with a backup (server stopped)
//	fieldsync admin users [-data DIR]
//	                            list the accounts
//	fieldsync admin reset-password [-data DIR] [-stdin] USER
//	                            print a new password for USER (or take it from stdin)
//	fieldsync import-outbox [-data DIR] [-by ADMIN] FILE
//	                            apply the unsent work a revoked or broken tablet exported
//	fieldsync seed [-data DIR] [-spec FILE|-] [-out FILE]
//	                            prepare a data folder for measurements; print a JSON manifest
//
// Every command that opens the database takes -db (FIELDSYNC_DB):
// sqlite:PATH, or postgres://user@host/db?sslmode=... for PostgreSQL; the
// default is the data folder's SQLite file (sqlite:data/fieldsync.db).
//
// Every flag has an environment variable (FIELDSYNC_<FLAG>, upper case,
// dashes as underscores); a flag given on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"fieldsync/server/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "fieldsync:", err)
		}
		os.Exit(1)
	}
}

// stdin is where `admin reset-password -stdin` reads; tests replace it.
var stdin io.Reader = os.Stdin

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "export" {
		return runExport(ctx, args, stdout, stderr)
	}
	if cmd == "admin" {
		return runAdmin(ctx, args, stdin, stdout, stderr)
	}
	if cmd == "import-outbox" {
		return runImportOutbox(ctx, args, stdout, stderr)
	}
	if cmd == "seed" {
		return runSeed(ctx, args, stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("fieldsync "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	var logLevel string
	fs.StringVar(&cfg.DataDir, "data", "data", "data folder: SQLite file, local blob folder, partial uploads")
	dbFlag(fs, &cfg.DB)
	fs.StringVar(&cfg.UploadDir, "uploads", "", "folder of partial uploads (default <data folder>/uploads); one shared folder for all instances when several run on PostgreSQL")
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address")
	fs.StringVar(&cfg.PublicURL, "public-url", "", "URL devices and browsers use to reach this server (default http://localhost:<port>)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (serve HTTPS with -tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key file")
	fs.StringVar(&cfg.S3.Endpoint, "s3-endpoint", "", "S3-compatible endpoint host:port; empty keeps blobs in the data folder")
	fs.StringVar(&cfg.S3.AccessKey, "s3-access-key", "", "S3 access key")
	fs.StringVar(&cfg.S3.SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&cfg.S3.Bucket, "s3-bucket", "fieldsync", "S3 bucket (created if missing)")
	fs.StringVar(&cfg.S3.Prefix, "s3-prefix", "", "key prefix inside the bucket")
	fs.StringVar(&cfg.S3.Region, "s3-region", "", "S3 region (default us-east-1)")
	fs.BoolVar(&cfg.S3.UseTLS, "s3-tls", false, "use HTTPS to reach the S3 endpoint")
	fs.BoolVar(&cfg.Demo, "demo", false, "load the demo county on start (once)")
	fs.StringVar(&cfg.TileURL, "tile-url", "", "map tile URL template for the console, e.g. https://tiles.example.org/{z}/{x}/{y}.png (default: no tiles)")
	fs.BoolVar(&cfg.TrustProxy, "trust-proxy", false, "take client addresses from X-Forwarded-For (only behind a trusted reverse proxy)")
	fs.BoolVar(&cfg.DisableGroupCommit, "no-group-commit", false, "commit each push on its own (for measurements)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	tz := fs.String("tz", app.DefaultTimeZone, "time zone the console shows times in (IANA name)")
	var bk backupFlags
	if cmd == "backup" || cmd == "restore" {
		fs.StringVar(&bk.out, "out", "", "backup: file to write")
		fs.BoolVar(&bk.toStore, "to-object-store", false, "backup: store the snapshot in the blob store under backups/")
		fs.StringVar(&bk.from, "from", "", "restore: backup file to restore")
		fs.StringVar(&bk.fromStore, "from-object-store", "", "restore: name of a backup in the blob store (as printed by backup)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return fmt.Errorf("-tz %q: %w", *tz, err)
	}
	cfg.Location = loc
	cfg.Logger = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Out = stdout
	// Commands that write a SQLite database hold its data folder's lock,
	// so that none of them runs beside a server on the same folder (backup
	// and export only read, and work beside a running server). PostgreSQL
	// serialises its writers itself, and applies migrations under an
	// advisory lock: there, instances and commands do not exclude each
	// other (restore says to stop every instance first).
	db, err := app.ParseDB(cfg.DB, cfg.DataDir)
	if err != nil {
		return err
	}
	switch cmd {
	case "migrate", "demo", "restore":
		if db.IsPostgres() {
			break
		}
		unlock, err := app.LockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	switch cmd {
	case "run":
		defer profileOnSignal(stderr)() // FIELDSYNC_CPUPROFILE etc.: see profile.go
		return app.Run(ctx, cfg)
	case "migrate":
		st, err := app.OpenStore(ctx, cfg) // Open applies the migrations
		if err != nil {
			return err
		}
		defer st.Close()
		v, err := app.SchemaVersion(ctx, st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database %s at schema version %d\n", db, v)
		return nil
	case "demo":
		st, err := app.OpenStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		blobs, err := app.OpenBlobs(ctx, cfg)
		if err != nil {
			return fmt.Errorf("blob store: %w", err)
		}
		_, err = app.LoadDemoWithEvidence(ctx, st, blobs, stdout)
		return err
	case "backup":
		return runBackup(ctx, cfg, db, bk, stdout)
	case "restore":
		return runRestore(ctx, cfg, db, bk, stdout)
	default:
		return fmt.Errorf("unknown command %q (run, migrate, demo, export, backup, restore, admin, import-outbox, seed)", cmd)
	}
}

// dbFlag adds -db (FIELDSYNC_DB through applyEnv): see app.ParseDB.
func dbFlag(fs *flag.FlagSet, v *string) {
	fs.StringVar(v, "db", "", "database: sqlite:PATH, or postgres://user@host/db?sslmode=... for PostgreSQL (default sqlite:<data folder>/fieldsync.db)")
}

// applyEnv sets every flag not given on the command line from
// FIELDSYNC_<NAME>.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		key := "FIELDSYNC_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", key, e)
			}
		}
	})
	return err
}
