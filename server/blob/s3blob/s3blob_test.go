package s3blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"fieldsync/server/blob"
	"fieldsync/server/blob/blobtest"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
)

func newStore(t *testing.T, cfg s3blob.Config) *s3blob.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := s3blob.New(ctx, cfg)
	if err != nil {
		t.Fatalf("s3blob.New(%s/%s): %v", cfg.Endpoint, cfg.Bucket, err)
	}
	return s
}

// TestMinioRoundTrip talks to the S3 server with minio-go directly: the
// proof that the tests run against a real S3 implementation.
func TestMinioRoundTrip(t *testing.T) {
	cfg := s3test.Config(t)
	cl, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: false,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cl.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("MakeBucket: %v", err)
	}
	data := []byte("the first field photo, as bytes")
	up, err := cl.PutObject(ctx, cfg.Bucket, "dir/hello.txt", bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	if up.Size != int64(len(data)) {
		t.Fatalf("PutObject size %d, want %d", up.Size, len(data))
	}
	st, err := cl.StatObject(ctx, cfg.Bucket, "dir/hello.txt", minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("StatObject: %v", err)
	}
	if st.Size != int64(len(data)) || st.ContentType != "text/plain" {
		t.Fatalf("StatObject = size %d type %q", st.Size, st.ContentType)
	}
	obj, err := cl.GetObject(ctx, cfg.Bucket, "dir/hello.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetObject read %q, %v", got, err)
	}
	_, err = cl.StatObject(ctx, cfg.Bucket, "dir/missing.txt", minio.StatObjectOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "NoSuchKey" {
		t.Fatalf("StatObject(missing) code %q (err %v), want NoSuchKey", code, err)
	}
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return newStore(t, s3test.Config(t))
	})
}

// TestConformance_Prefix runs the suite with every store sharing one
// bucket under its own prefix.
func TestConformance_Prefix(t *testing.T) {
	shared := s3test.Config(t)
	n := 0
	blobtest.Run(t, func(t *testing.T) blob.Store {
		n++
		cfg := shared
		cfg.Prefix = "tenant/" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
		return newStore(t, cfg)
	})
	if n == 0 {
		t.Fatal("suite created no stores")
	}
}

func TestNew_ExistingBucket(t *testing.T) {
	cfg := s3test.Config(t)
	a := newStore(t, cfg)
	data := []byte("kept")
	sum := blobtest.Sum(data)
	if err := a.Put(t.Context(), sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}
	b := newStore(t, cfg) // the bucket exists now
	if _, err := b.Stat(t.Context(), sum); err != nil {
		t.Fatalf("second store does not see the blob: %v", err)
	}
}

func TestNew_BadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  s3blob.Config
	}{
		{"NoEndpoint", s3blob.Config{Bucket: "b"}},
		{"NoBucket", s3blob.Config{Endpoint: "127.0.0.1:1"}},
		{"Scheme", s3blob.Config{Endpoint: "http://127.0.0.1:1", Bucket: "b"}},
		{"HalfCredentials", s3blob.Config{Endpoint: "127.0.0.1:1", Bucket: "b", AccessKey: "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s3blob.New(t.Context(), tt.cfg); err == nil || errors.Is(err, blob.ErrUnavailable) {
				t.Fatalf("New = %v, want a config error", err)
			}
		})
	}
}

func TestNew_Unreachable(t *testing.T) {
	// Port 1 on loopback: connection refused.
	start := time.Now()
	_, err := s3blob.New(t.Context(), s3blob.Config{Endpoint: "127.0.0.1:1", Bucket: "b", Timeout: 2 * time.Second})
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("New = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v to notice", d)
	}
}

func TestPut_LeavesNoTemporaryObjects(t *testing.T) {
	cfg := s3test.Config(t)
	cfg.Prefix = "p"
	s := newStore(t, cfg)
	data := blobtest.Data(1, 10_000)
	sum := blobtest.Sum(data)
	if err := s.Put(t.Context(), sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}
	bad := blobtest.Sum([]byte("other"))
	if err := s.Put(t.Context(), bad, int64(len(data)), blobtest.Stream(data)); !errors.Is(err, blob.ErrHashMismatch) {
		t.Fatalf("Put wrong hash = %v", err)
	}
	if err := s.Put(t.Context(), bad, int64(len(data)+1), blobtest.Stream(data)); !errors.Is(err, blob.ErrSizeMismatch) {
		t.Fatalf("Put short = %v", err)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for obj := range s.Client().ListObjects(t.Context(), cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	if want := "p/sha256/" + sum; len(keys) != 1 || keys[0] != want {
		t.Fatalf("bucket holds %q, want only %q", keys, want)
	}
}

func TestCallerCancel_IsNotUnavailable(t *testing.T) {
	s := newStore(t, s3test.Config(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Stat(ctx, blobtest.Sum(nil))
	if !errors.Is(err, context.Canceled) || errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("Stat with cancelled ctx = %v, want context.Canceled", err)
	}
}

// TestOutage stops a private S3 server under a live store: every call
// must fail fast with ErrUnavailable, and work again once it is back.
func TestOutage(t *testing.T) {
	srv := s3test.StartServer(t)
	cfg := srv.Config(t)
	cfg.Timeout = 2 * time.Second
	s := newStore(t, cfg)
	data := blobtest.Data(2, 50_000)
	sum := blobtest.Sum(data)
	if err := s.Put(t.Context(), sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	other := blobtest.Data(3, 1000)
	checks := map[string]func() error{
		"Stat": func() error { _, err := s.Stat(t.Context(), sum); return err },
		"Open": func() error {
			rc, _, err := s.Open(t.Context(), sum)
			if rc != nil {
				rc.Close()
			}
			return err
		},
		"Put":    func() error { return s.Put(t.Context(), blobtest.Sum(other), 1000, blobtest.Stream(other)) },
		"Delete": func() error { return s.Delete(t.Context(), sum) },
		"Check":  func() error { return s.Check(t.Context()) },
		"PutDerived": func() error {
			return s.PutDerived(t.Context(), "thumb/a.jpg", 1000, blobtest.Stream(other))
		},
	}
	for name, call := range checks {
		start := time.Now()
		err := call()
		if !errors.Is(err, blob.ErrUnavailable) {
			t.Errorf("%s while down = %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %v to fail", name, d)
		}
	}

	srv.Start()
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check after restart: %v", err)
	}
	rc, _, err := s.Open(t.Context(), sum)
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %d bytes, %v", len(got), err)
	}
}

// TestHungServer freezes a private S3 server: calls must time out with
// ErrUnavailable instead of hanging.
func TestHungServer(t *testing.T) {
	srv := s3test.StartServer(t)
	cfg := srv.Config(t)
	cfg.Timeout = time.Second
	s := newStore(t, cfg)
	data := blobtest.Data(4, 1000)
	sum := blobtest.Sum(data)
	if err := s.Put(t.Context(), sum, int64(len(data)), blobtest.Stream(data)); err != nil {
		t.Fatal(err)
	}

	srv.Pause()
	start := time.Now()
	if _, err := s.Stat(t.Context(), sum); !errors.Is(err, blob.ErrUnavailable) {
		t.Errorf("Stat while hung = %v, want ErrUnavailable", err)
	}
	const size = 32 << 20 // more than loopback socket buffers hold
	if err := s.Put(t.Context(), blobtest.GenSum(5, size), size, blobtest.GenReader(5, size)); !errors.Is(err, blob.ErrUnavailable) {
		t.Errorf("Put while hung = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("hung calls took %v", d)
	}

	srv.Resume()
	if _, err := s.Stat(t.Context(), sum); err != nil {
		t.Fatalf("Stat after resume: %v", err)
	}
}

// TestPut_Multipart puts a blob larger than one upload part, so minio-go
// uses a multipart upload and the store copies a multipart object.
func TestPut_Multipart(t *testing.T) {
	s := newStore(t, s3test.Config(t))
	const size = 20<<20 + 3
	sum := blobtest.GenSum(21, size)
	if err := s.Put(t.Context(), sum, size, blobtest.GenReader(21, size)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	rc, info, err := s.Open(t.Context(), sum)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	if info.Size != size {
		t.Fatalf("size %d, want %d", info.Size, size)
	}
	v := blob.NewVerifier(rc, size)
	if err := v.Finish(sum); err != nil {
		t.Fatalf("read back: %v", err)
	}
	// And a wrong hash of that size stores nothing.
	bad := blobtest.GenSum(22, size)
	if err := s.Put(t.Context(), bad, size, blobtest.GenReader(21, size)); !errors.Is(err, blob.ErrHashMismatch) {
		t.Fatalf("Put wrong hash = %v", err)
	}
	if _, err := s.Stat(t.Context(), bad); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after mismatch = %v", err)
	}
}
