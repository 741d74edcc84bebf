// Package s3blob is a blob.Store in any S3-compatible object store
// (AWS S3, MinIO, SeaweedFS, Ceph RGW, versitygw, ...) through minio-go.
//
// Keys in the bucket, under Config.Prefix:
//
//	sha256/<sum>    blobs
//	derived/<name>  derived objects (thumbnails, ...)
//	tmp/<random>    the health check's small object, removed at once
//
// Put never buffers a whole object: it streams the reader, hashing as it
// goes, straight to the final key, and withholds the last bytes unless
// the whole source matches the promised sum and size (blob's gated
// verifier). An S3 PUT commits only a complete body, and a multipart
// upload only once completed, so the final key never holds unverified
// bytes, and each byte crosses to the store once (no temporary key, no
// server-side copy). A single blob is limited to 5 GiB.
//
// Errors meaning the store cannot be reached (network errors, timeouts,
// 5xx answers, stalled uploads) wrap blob.ErrUnavailable.
package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"fieldsync/server/blob"
)

var _ blob.Store = (*Store)(nil)

// Config says where and how to reach the object store. Only Endpoint and
// Bucket are required.
type Config struct {
	// Endpoint is the S3 service's host and optional port, without a
	// scheme: "127.0.0.1:7070", "s3.eu-central-1.amazonaws.com".
	Endpoint string
	// AccessKey and SecretKey are the S3 credentials. Both empty means
	// anonymous access.
	AccessKey string
	// SecretKey: see AccessKey.
	SecretKey string
	// Bucket holds the blobs. New creates it if it does not exist.
	Bucket string
	// Prefix is put before every key, so several deployments can share a
	// bucket: "fieldsync/prod". A trailing "/" is added when missing;
	// empty means the bucket's root.
	Prefix string
	// Region is the bucket's region. Default "us-east-1".
	Region string
	// UseTLS selects https instead of http.
	UseTLS bool
	// Timeout bounds each metadata request (stat, copy, delete, bucket
	// checks), the wait for response headers, and, four times over, how
	// long an upload may make no progress. Default 15s.
	Timeout time.Duration
}

const (
	defaultRegion  = "us-east-1"
	defaultTimeout = 15 * time.Second
	// maxRetries bounds minio-go's retries (its default of 10 makes an
	// outage take ~10s per call to surface).
	maxRetries = 3
	// partSize is the multipart chunk for blobs larger than it: the only
	// buffer Put holds per upload.
	partSize = 8 << 20
	// maxBlobSize bounds one blob (the largest single object many S3
	// stores take, and far above any photo or scan).
	maxBlobSize = 5 << 30
)

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Endpoint == "" {
		return c, errors.New("s3blob: Endpoint is required")
	}
	if strings.Contains(c.Endpoint, "://") {
		return c, fmt.Errorf("s3blob: Endpoint %q must be host[:port] without a scheme (set UseTLS for https)", c.Endpoint)
	}
	if c.Bucket == "" {
		return c, errors.New("s3blob: Bucket is required")
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return c, errors.New("s3blob: set both AccessKey and SecretKey, or neither")
	}
	c.Prefix = strings.TrimLeft(c.Prefix, "/")
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.Region == "" {
		c.Region = defaultRegion
	}
	if c.Timeout <= 0 {
		c.Timeout = defaultTimeout
	}
	return c, nil
}

// NewClient returns a minio-go client for cfg with the transport
// timeouts and retry limit the Store uses. It makes no request.
func NewClient(cfg Config) (*minio.Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return newClient(cfg)
}

func newClient(cfg Config) (*minio.Client, error) {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{})
	}
	cl, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      creds,
		Secure:     cfg.UseTLS,
		Transport:  tr,
		Region:     cfg.Region,
		MaxRetries: maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3blob: %w", err)
	}
	return cl, nil
}

// Store is a blob.Store in an S3 bucket.
type Store struct {
	cl  *minio.Client
	cfg Config
}

// New connects to the object store and creates the bucket if it is
// missing. If the store cannot be reached the error wraps
// blob.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cl, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{cl: cl, cfg: cfg}
	if err := s.ensureBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) ensureBucket(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ok, err := s.cl.BucketExists(octx, s.cfg.Bucket)
	if err != nil {
		return s.mapErr(ctx, "bucket exists", err)
	}
	if ok {
		return nil
	}
	err = s.cl.MakeBucket(octx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
	if err != nil {
		code := minio.ToErrorResponse(err).Code
		if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return s.mapErr(ctx, "make bucket", err)
	}
	return nil
}

// Client returns the underlying minio-go client.
func (s *Store) Client() *minio.Client { return s.cl }

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// Prefix returns the normalized key prefix ("" or ending in "/").
func (s *Store) Prefix() string { return s.cfg.Prefix }

func (s *Store) blobKey(sum string) string     { return s.cfg.Prefix + "sha256/" + sum }
func (s *Store) derivedKey(name string) string { return s.cfg.Prefix + "derived/" + name }
func (s *Store) tmpKey(kind string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return s.cfg.Prefix + "tmp/" + kind + "-" + hex.EncodeToString(b[:])
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, sum string) (blob.Info, error) {
	if err := blob.CheckSum(sum); err != nil {
		return blob.Info{}, err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	oi, err := s.cl.StatObject(octx, s.cfg.Bucket, s.blobKey(sum), minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, s.mapErr(ctx, "stat", err)
	}
	return blob.Info{SHA256: sum, Size: oi.Size}, nil
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, sum string, size int64, r io.Reader) error {
	if err := blob.CheckSum(sum); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", blob.ErrSizeMismatch, size)
	}
	if size > maxBlobSize {
		return fmt.Errorf("s3 put: %w: %d bytes is over the %d-byte limit", blob.ErrSizeMismatch, size, int64(maxBlobSize))
	}
	info, err := s.Stat(ctx, sum)
	switch {
	case err == nil && info.Size != size:
		return fmt.Errorf("s3 put: %w: present blob has %d bytes, not %d", blob.ErrSizeMismatch, info.Size, size)
	case err == nil:
		return nil
	case !errors.Is(err, blob.ErrNotFound):
		return err
	}
	return s.putVerified(ctx, "put", s.blobKey(sum), sum, size, r)
}

// putVerified streams r straight to dst, verifying it on the way: the
// gated verifier withholds the body's last bytes unless the whole source
// has size bytes and (when sum is set) hashes to sum, so a source that
// does not match ends the request before the store could commit it (a
// single PUT stops short of its Content-Length, a multipart upload is
// aborted before its completion). Nothing is written twice: no temporary
// key, no server-side copy. With sum == "" only the size is checked.
func (s *Store) putVerified(ctx context.Context, op, dst, sum string, size int64, r io.Reader) error {
	v := blob.NewGatedVerifier(r, size, sum)
	if size == 0 {
		// An empty body gives the gate no read to stop: check first.
		if err := v.Finish(sum); err != nil {
			return fmt.Errorf("s3 %s: %w", op, err)
		}
	}

	// A watchdog cancels the upload if the body stops moving (a hung
	// server, a dead link); http.Transport has no write timeout.
	stall := 4 * s.cfg.Timeout
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	wd := time.AfterFunc(stall, func() { stalled.Store(true); cancel() })
	defer wd.Stop()
	body := readerFunc(func(p []byte) (int, error) {
		wd.Reset(stall)
		return v.Read(p)
	})

	_, err := s.cl.PutObject(uctx, s.cfg.Bucket, dst, body, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    partSize,
	})
	wd.Stop()
	if err != nil {
		if verr := v.Err(); verr != nil {
			return fmt.Errorf("s3 %s: %w", op, verr)
		}
		if stalled.Load() && ctx.Err() == nil {
			return fmt.Errorf("s3 %s: %w: upload made no progress for %v", op, blob.ErrUnavailable, stall)
		}
		return s.mapErr(ctx, op, err)
	}
	if err := v.Finish(sum); err != nil {
		// Not reached while the client reads every body to its length (the
		// gate stops the last read); dst is not removed, since a
		// concurrent Put of the same blob may own it.
		return fmt.Errorf("s3 %s: %w", op, err)
	}
	return nil
}

// removeQuietly removes an object, best effort, even if ctx is already
// cancelled.
func (s *Store) removeQuietly(ctx context.Context, key string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	_ = s.cl.RemoveObject(rctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{})
}

// Open implements blob.Store. The reader is a *minio.Object; reads use
// ctx, so keep ctx alive until the reader is closed.
func (s *Store) Open(ctx context.Context, sum string) (io.ReadSeekCloser, blob.Info, error) {
	if err := blob.CheckSum(sum); err != nil {
		return nil, blob.Info{}, err
	}
	obj, size, err := s.open(ctx, "open", s.blobKey(sum))
	if err != nil {
		return nil, blob.Info{}, err
	}
	return obj, blob.Info{SHA256: sum, Size: size}, nil
}

func (s *Store) open(ctx context.Context, op, key string) (*minio.Object, int64, error) {
	obj, err := s.cl.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, s.mapErr(ctx, op, err)
	}
	oi, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, 0, s.mapErr(ctx, op, err)
	}
	return obj, oi.Size, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, sum string) error {
	if err := blob.CheckSum(sum); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := s.cl.RemoveObject(octx, s.cfg.Bucket, s.blobKey(sum), minio.RemoveObjectOptions{})
	if err != nil {
		err = s.mapErr(ctx, "delete", err)
		if errors.Is(err, blob.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// PutDerived implements blob.Store.
func (s *Store) PutDerived(ctx context.Context, name string, size int64, r io.Reader) error {
	if err := blob.CheckDerivedName(name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", blob.ErrSizeMismatch, size)
	}
	if size > maxBlobSize {
		return fmt.Errorf("s3 put derived: %w: %d bytes is over the %d-byte limit", blob.ErrSizeMismatch, size, int64(maxBlobSize))
	}
	return s.putVerified(ctx, "derived", s.derivedKey(name), "", size, r)
}

// OpenDerived implements blob.Store. The reader is a *minio.Object; keep
// ctx alive until it is closed.
func (s *Store) OpenDerived(ctx context.Context, name string) (io.ReadSeekCloser, int64, error) {
	if err := blob.CheckDerivedName(name); err != nil {
		return nil, 0, err
	}
	obj, size, err := s.open(ctx, "open derived", s.derivedKey(name))
	if err != nil {
		return nil, 0, err
	}
	return obj, size, nil
}

// Check implements blob.Store: it writes and removes a small object
// under tmp/.
func (s *Store) Check(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	key := s.tmpKey("check")
	data := []byte("ok\n")
	_, err := s.cl.PutObject(octx, s.cfg.Bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "text/plain"})
	if err != nil {
		return s.mapErr(ctx, "check", err)
	}
	if err := s.cl.RemoveObject(octx, s.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return s.mapErr(ctx, "check remove", err)
	}
	return nil
}

// mapErr turns a minio-go error into one wrapping a blob sentinel:
// NoSuchKey → ErrNotFound; transport errors, timeouts and 5xx →
// ErrUnavailable; the caller's own cancellation → ctx.Err(). Other S3
// errors (access denied, missing bucket, ...) stay plain errors: retrying
// will not fix them.
func (s *Store) mapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("s3 %s: %w", op, cerr)
	}
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		resp = minio.ToErrorResponse(err)
	}
	switch {
	case resp.Code == "NoSuchKey" || (resp.Code == "NotFound" && resp.StatusCode == http.StatusNotFound):
		return fmt.Errorf("s3 %s: %w", op, blob.ErrNotFound)
	case resp.StatusCode >= 500, resp.Code == "SlowDown", resp.Code == "ServiceUnavailable",
		resp.Code == "InternalError", resp.Code == "RequestTimeout":
		return fmt.Errorf("s3 %s: %w: %v", op, blob.ErrUnavailable, err)
	case resp.Code != "":
		return fmt.Errorf("s3 %s: %w", op, err)
	}
	// Not an S3 answer: the request never completed (refused, reset,
	// timed out, DNS, TLS).
	return fmt.Errorf("s3 %s: %w: %v", op, blob.ErrUnavailable, err)
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
