// Package app wires fieldsync's parts into a running server: the store
// (a SQLite file, or PostgreSQL shared by any number of instances), the blob store (local folder or S3), the HTTP API, first-start
// set-up and graceful shutdown. The fieldsync binary's main is a thin layer
// over it that reads flags and environment into Config.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
	_ "time/tzdata" // the programme's zone without a zone database on the host

	"fieldsync/server/api"
	"fieldsync/server/auth"
	"fieldsync/server/blob"
	"fieldsync/server/blob/localblob"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/domain"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/server/web"
)

// Config is everything the server can be told. Zero values take the
// documented defaults.
type Config struct {
	// DataDir holds the SQLite file (unless DB names another database),
	// the local blob folder and the partial uploads (default ./data).
	DataDir string
	// DB names the database (ParseDB): empty for the default
	// sqlite:DataDir/fieldsync.db, sqlite:PATH for another file, or
	// postgres://user@host/db?sslmode=... for PostgreSQL.
	DB string
	// UploadDir holds the partial uploads (default DataDir/uploads). With
	// several instances on PostgreSQL, give them one shared folder (a
	// network file system): a PATCH may land on another instance than the
	// one that took the POST, and the upload's lock is held across
	// instances (Store.LockUpload).
	UploadDir string
	// Addr is the listen address (default ":8080").
	Addr string
	// PublicURL is how devices and browsers reach the server (default
	// http://localhost:<port>). When given, upload Location headers are
	// built from it; when not, they are paths the client resolves.
	PublicURL string
	// TLSCert and TLSKey, both set, serve HTTPS.
	TLSCert, TLSKey string
	// S3 stores evidence in an S3-compatible object store when
	// S3.Endpoint is set; otherwise blobs live in DataDir/blobs.
	S3 s3blob.Config
	// Demo loads the demo county on start (once).
	Demo bool
	// DemoNoEvidence leaves the demo's photos out (about 12 s of CPU at
	// the first start: drawing and analysing 1,223 JPEGs). For tests that
	// do not look at evidence.
	DemoNoEvidence bool
	// TileURL, if set, draws map tiles under the console's map, e.g.
	// "https://tiles.example.org/{z}/{x}/{y}.png"; empty: no tiles.
	TileURL string
	// TrustProxy takes client addresses from X-Forwarded-For (only behind
	// a trusted reverse proxy).
	TrustProxy bool
	// Location is the programme's time zone: the console shows every time
	// in it, with its offset, and "this month" starts there (default
	// Asia/Shanghai, whatever the server's own zone).
	Location *time.Location
	// DisableGroupCommit turns off group commit (for measurements).
	DisableGroupCommit bool
	// Logger defaults to JSON logs on stderr.
	Logger *slog.Logger
	// Out receives the first-start banner (default stdout).
	Out io.Writer
	// Ready, if set, is called with the bound address once serving.
	Ready func(addr string)
	// Timeouts bound how long a client may take to send a request and
	// keep an idle connection; zero fields take the defaults.
	Timeouts Timeouts
}

// Timeouts are the HTTP server's limits on slow clients (slowloris).
type Timeouts struct {
	// ReadHeader bounds reading a request's headers (default 10 s).
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included (default 2
	// minutes). An upload PATCH moves its own read deadline as bytes
	// arrive (upload.Config.IdleTimeout), so a long upload over 2G is not
	// cut while a stalled one is.
	Read time.Duration
	// Idle bounds a kept-alive connection with no request (default 2
	// minutes).
	Idle time.Duration
}

func (t *Timeouts) setDefaults() {
	if t.ReadHeader <= 0 {
		t.ReadHeader = 10 * time.Second
	}
	if t.Read <= 0 {
		t.Read = 2 * time.Minute
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	c.Timeouts.setDefaults()
	if c.Location == nil {
		c.Location = DefaultLocation()
	}
}

// DefaultTimeZone is the programme's zone unless -tz says otherwise.
const DefaultTimeZone = "Asia/Shanghai"

// DefaultLocation is DefaultTimeZone, loaded from the zone database
// compiled into the binary (time/tzdata), so it needs none on the host.
func DefaultLocation() *time.Location {
	loc, err := time.LoadLocation(DefaultTimeZone)
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return loc
}

// DBPath is where the SQLite file lives in a data folder.
func DBPath(dataDir string) string { return filepath.Join(dataDir, "fieldsync.db") }

// OpenStore opens the configured database (cfg.DB; by default the data
// folder's SQLite file, creating the folder) and applies the migrations.
func OpenStore(ctx context.Context, cfg Config) (*sqlstore.Store, error) {
	cfg.setDefaults()
	db, err := ParseDB(cfg.DB, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if db.IsPostgres() {
		st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: db.PostgresURL, DisableGroupCommit: cfg.DisableGroupCommit,
			InstanceID: instanceID(cfg.DataDir)})
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL 数据库 %s: %w", db, err)
		}
		return st, nil
	}
	if err := os.MkdirAll(filepath.Dir(db.SQLitePath), 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return sqlstore.Open(ctx, sqlstore.Config{Path: db.SQLitePath, DisableGroupCommit: cfg.DisableGroupCommit})
}

// SchemaVersion is the newest migration applied to the open store's
// database (Open applies them all). It reads through the store's read
// pool, which is read-only on PostgreSQL, so it does not create the
// table as migrations.Current does.
func SchemaVersion(ctx context.Context, st *sqlstore.Store) (int, error) {
	var v sql.NullInt64
	if err := st.DB().QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v.Int64), nil
}

// OpenBlobs opens the configured blob store.
func OpenBlobs(ctx context.Context, cfg Config) (blob.Store, error) {
	cfg.setDefaults()
	if cfg.S3.Endpoint != "" {
		return s3blob.New(ctx, cfg.S3)
	}
	return localblob.New(filepath.Join(cfg.DataDir, "blobs"))
}

// Run serves until ctx is cancelled, then shuts down gracefully.
//
// It listens first and answers 503 (and /healthz says why) until the
// store is open and the API built: on PostgreSQL a database that is down
// at start-up is waited for, with a log line per attempt (see
// openStoreRetrying), instead of ending the process.
//
// The data folder's lock is taken on both engines: on SQLite it guards
// the database file, and on both it guards the instance's partial uploads
// and (without S3) its blob folder. Instances sharing one PostgreSQL each
// take their own -data folder, so they do not exclude each other.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	log := cfg.Logger
	db, err := ParseDB(cfg.DB, cfg.DataDir)
	if err != nil {
		return err
	}
	unlock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	uploadURL := cfg.PublicURL // upload Locations: only a URL the operator gave
	if cfg.PublicURL == "" {
		scheme := "http"
		if cfg.TLSCert != "" {
			scheme = "https"
		}
		cfg.PublicURL = fmt.Sprintf("%s://localhost:%d", scheme, ln.Addr().(*net.TCPAddr).Port)
	}
	g := newGate("正在连接数据库")
	hs := &http.Server{Handler: g, ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		ReadTimeout: cfg.Timeouts.Read, IdleTimeout: cfg.Timeouts.Idle}
	// sctx ends when ctx does or the HTTP server fails (a bad TLS key), so
	// that a start waiting for the database stops either way.
	sctx, serveFailed := context.WithCancelCause(ctx)
	defer serveFailed(nil)
	errc := make(chan error, 1)
	go func() {
		var err error
		if cfg.TLSCert != "" {
			err = hs.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			err = hs.Serve(ln)
		}
		serveFailed(fmt.Errorf("serve: %w", err))
		errc <- err
	}()
	log.Info("listening; opening the database (503 until ready)", "listen", ln.Addr().String(), "db", db.String())
	srv, st, err := start(sctx, cfg, db, uploadURL, g, log)
	if st != nil {
		defer st.Close()
	}
	if srv != nil {
		defer srv.Close()
	}
	if err != nil {
		if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
			err = cause // the HTTP server failed
		}
		sdctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sdctx)
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			log.Info("stopped before the database was ready")
			return nil // stopped (SIGTERM) while waiting: a clean exit
		}
		return err
	}
	g.open(srv.Handler())
	log.Info("serving", "addr", ln.Addr().String(), "public_url", cfg.PublicURL, "data", cfg.DataDir, "db", db.String())
	printWhereToOpen(cfg)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sdctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(sdctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// start opens the store (waiting for PostgreSQL if need be) and the blob
// store, loads the demo if asked, creates the first admin, and builds the
// HTTP API; g tells /healthz what it waits for meanwhile. What it returns
// non-nil the caller closes, also with an error.
func start(ctx context.Context, cfg Config, db Database, uploadURL string, g *gate, log *slog.Logger) (*api.Server, *sqlstore.Store, error) {
	st, err := openStoreRetrying(ctx, cfg, db, g, log)
	if err != nil {
		return nil, nil, err
	}
	blobs, err := OpenBlobs(ctx, cfg)
	if err != nil {
		return nil, st, fmt.Errorf("blob store: %w", err)
	}
	if cfg.Demo {
		g.wait("数据库已连接，正在加载示范数据")
		demoBlobs := blobs
		if cfg.DemoNoEvidence {
			demoBlobs = nil
		}
		if _, err := LoadDemoWithEvidence(ctx, st, demoBlobs, cfg.Out); err != nil {
			return nil, st, fmt.Errorf("demo: %w", err)
		}
	}
	if err := firstStart(ctx, st, cfg); err != nil {
		return nil, st, err
	}
	srv, err := api.New(api.Config{
		Store: st, Logger: log, PublicURL: cfg.PublicURL, UploadURL: uploadURL, SecureCookies: cfg.TLSCert != "",
		Blobs: blobs, UploadDir: cfg.uploadDir(), TrustProxy: cfg.TrustProxy,
		HealthChecks: map[string]func(context.Context) error{"blobs": blobs.Check},
	})
	if err != nil {
		return nil, st, err
	}
	if _, err := web.Mount(srv, web.Config{Store: st, Logger: log, TileURL: cfg.TileURL, SecureCookies: cfg.TLSCert != "", TrustProxy: cfg.TrustProxy,
		Location: cfg.Location, PublicURL: uploadURL}); err != nil {
		return srv, st, err
	}
	if _, err := MountApp(srv.Echo()); err != nil {
		return srv, st, err
	}
	if up := srv.Uploads(); up != nil {
		go up.Janitor(ctx, 10*time.Minute)
		if cfg.Demo && !cfg.DemoNoEvidence {
			// The demo's photos were stored unanalysed: let the analysis
			// worker read them before the console opens, so that its
			// evidence pages show their flags at once.
			g.wait("数据库已连接，正在分析示范证据照片")
			if err := waitDemoAnalysed(ctx, up, cfg.Out); err != nil {
				return srv, st, err
			}
		}
	}
	return srv, st, nil
}

// firstStart creates the admin account on an empty database and prints,
// once, how to sign in and enroll a device.
func firstStart(ctx context.Context, st *sqlstore.Store, cfg Config) error {
	users, err := st.Users(ctx)
	if err != nil {
		return err
	}
	for _, u := range users {
		if u.Role == domain.RoleAdmin {
			return nil
		}
	}
	pw := auth.NewToken()[:16]
	h, err := auth.HashPassword(pw)
	if err != nil {
		return err
	}
	if _, err := st.CreateUser(ctx, domain.User{Username: "admin", DisplayName: "Administrator", Role: domain.RoleAdmin, PasswordHash: h}); err != nil {
		if errors.Is(err, domain.ErrExists) {
			// Another instance on the same PostgreSQL made it a moment
			// ago, and printed its password.
			return nil
		}
		return fmt.Errorf("create admin: %w", err)
	}
	fmt.Fprintf(cfg.Out, `
fieldsync 首次启动。

  打开：    %[1]s/console/   （API 在 %[1]s/api/v1，OpenAPI 在 %[1]s/openapi.json）
  登录：    admin / %[2]s   （只显示这一次，请登录后修改；忘记时用 fieldsync admin reset-password admin）
  数据目录：%[3]s

登记一台平板：
  1. 在管理后台“用户”页新建网格员，并分配负责的村民小组；
  2. 点“登记设备”生成登记码（15 分钟内有效，只能用一次）和二维码；
  3. 在平板浏览器打开 %[1]s/app/ ，扫码或输入登记码。
     开发者也可用：go run ./mobileclient/cmd/fieldcli enroll -server %[1]s -code <登记码>

`, cfg.PublicURL, pw, cfg.DataDir)
	return nil
}

// printWhereToOpen tells, on every start and in plain text, where the
// console and the field app are: the JSON log says it too, but a newcomer
// reads the terminal.
func printWhereToOpen(cfg Config) {
	fmt.Fprintf(cfg.Out, `fieldsync 已启动（数据目录 %[2]s）
  管理后台：%[1]s/console/
  外业应用：%[1]s/app/    （在平板的浏览器中打开，添加到主屏幕）
`, cfg.PublicURL, cfg.DataDir)
}

// waitDemoAnalysed waits (at most two minutes) for the analysis worker to
// read every stored blob, saying so when it takes a while.
func waitDemoAnalysed(ctx context.Context, up *upload.Handler, out io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- up.WaitAnalysed(wctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Second):
		fmt.Fprintln(out, "正在分析示范证据照片（读取拍摄时间和位置，比对相似照片），请稍候……")
		err = <-done
	}
	switch {
	case err == nil:
		if d := time.Since(start); d > time.Second {
			fmt.Fprintf(out, "示范证据照片已分析完毕（%.1f 秒）。\n", d.Seconds())
		}
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintln(out, "示范证据照片仍在后台分析，部分疑点标记稍后才会出现。")
		return nil
	}
	return fmt.Errorf("demo evidence: %w", err)
}

// uploadDir is Config.UploadDir or its default.
func (c Config) uploadDir() string {
	if c.UploadDir != "" {
		return c.UploadDir
	}
	return filepath.Join(c.DataDir, "uploads")
}

// instanceID names this instance in the analysis claims it holds: the host
// and its data folder, the same after a restart, so that an instance
// restarted after a crash takes its own claims back at once instead of
// when their leases run out.
func instanceID(dataDir string) string {
	host, _ := os.Hostname()
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	return host + ":" + dataDir
}
