package upload_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"fieldsync/server/blob/localblob"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
)

// faultDisk stands for the disk under the partial files. A write past the
// free space writes what fits and fails with ENOSPC; a chosen fsync fails
// with EIO and loses the bytes written since the last good fsync (they
// are overwritten with junk: after a failed fsync the kernel may have
// dropped the pages, and what a read shows is not what the disk holds).
// durable is the file's length at its last good fsync.
type faultDisk struct {
	mu       sync.Mutex
	free     int64 // bytes that may still be written; -1: no limit
	failSync int   // the failSync-th next fsync fails; 0: none
	durable  int64
}

type faultFile struct {
	*os.File
	d *faultDisk
}

func (d *faultDisk) open(path string) (upload.PartFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &faultFile{f, d}, nil
}

func (d *faultDisk) set(fn func(d *faultDisk)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d)
}

func (d *faultDisk) durableLen() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.durable
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if f.d.free >= 0 && int64(len(p)) > f.d.free {
		n, _ := f.File.WriteAt(p[:f.d.free], off)
		f.d.free -= int64(n)
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	n, err := f.File.WriteAt(p, off)
	if f.d.free >= 0 {
		f.d.free -= int64(n)
	}
	return n, err
}

func (f *faultFile) Sync() error {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if f.d.failSync > 0 {
		if f.d.failSync--; f.d.failSync == 0 {
			if lost := fi.Size() - f.d.durable; lost > 0 {
				_, _ = f.File.WriteAt(bytes.Repeat([]byte{0xEE}, int(lost)), f.d.durable)
			}
			return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.EIO}
		}
	}
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.d.durable = fi.Size()
	return nil
}

func (f *faultFile) Truncate(size int64) error {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	f.d.durable = min(f.d.durable, size)
	return nil
}

// TestUpload_DiskFault: a failed write (full disk) or fsync is never
// acknowledged as received. The answer is 507 storage_full or
// 500 with details.offset at the last durable byte, HEAD agrees, the
// partial file is cut back to it (no junk from lost pages survives), and
// the client resumes from there once the disk works again.
func TestUpload_DiskFault(t *testing.T) {
	const size = 300_000
	for _, tc := range []struct {
		name       string
		free       int64
		failSync   int
		status     int
		code       string
		failsAgain bool // a retry while the fault lasts fails the same way
	}{
		{"DiskFull", 100_000, 0, http.StatusInsufficientStorage, "storage_full", true},
		{"FsyncFails", -1, 3, http.StatusInternalServerError, "internal", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newField(t)
			ctx := t.Context()
			disk := &faultDisk{free: tc.free, failSync: tc.failSync}
			blobs, err := localblob.New(filepath.Join(t.TempDir(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			_, srv := serveUploads(t, f.dev.ID, upload.Config{Store: f.env.Store, Blobs: blobs, Dir: dir, OpenPart: disk.open, SyncEvery: 16 << 10})
			cl := &uploadtest.Client{Base: srv.URL, Token: f.dev.Token}
			data := f.file(t, size)
			c, err := cl.Create(ctx, data, nil)
			if err != nil || c.Status != http.StatusCreated {
				t.Fatalf("create: %v %+v", err, c)
			}
			loc := c.Header.Get("Location")
			id := filepath.Base(loc)

			p, err := cl.Patch(ctx, loc, 0, data, nil)
			if err != nil || p.Status != tc.status || string(p.Error.Code) != tc.code {
				t.Fatalf("PATCH on a failing disk: want %d %s, got %v %+v %s", tc.status, tc.code, err, p, p.Body)
			}
			off, ok := p.Error.Details["offset"].(float64)
			if !ok || off < 0 || off >= size {
				t.Fatalf("details.offset %v", p.Error.Details)
			}
			at := int64(off)
			// Every byte the server says it has is durable, and is the
			// client's.
			if d := disk.durableLen(); at > d {
				t.Fatalf("offset %d acknowledged, only %d bytes durable", at, d)
			}
			part, err := os.ReadFile(filepath.Join(dir, id+".part"))
			if err != nil || int64(len(part)) != at || !bytes.Equal(part, data[:at]) {
				t.Fatalf("partial file: %d bytes (offset %d), same as sent: %v, %v", len(part), at, bytes.Equal(part, data[:min(len(part), len(data))]), err)
			}
			if h, err := cl.Head(ctx, loc); err != nil || h.Status != http.StatusOK || h.Offset() != at {
				t.Fatalf("HEAD: want offset %d, got %v %+v", at, err, h)
			}
			if tc.failsAgain {
				p, err := cl.Patch(ctx, loc, at, data[at:], nil)
				if err != nil || p.Status != tc.status || p.Error.Details["offset"] != off {
					t.Fatalf("PATCH while still full: %v %+v", err, p)
				}
			}
			// The disk works again: resume from the offset given.
			disk.set(func(d *faultDisk) { d.free, d.failSync = -1, 0 })
			p, err = cl.Patch(ctx, loc, at, data[at:], nil)
			if err != nil || p.Status != http.StatusNoContent || p.Offset() != size {
				t.Fatalf("resumed PATCH: %v %+v %s", err, p, p.Body)
			}
			if ok, err := f.env.Store.BlobPresent(ctx, uploadtest.Sum(data)); err != nil || !ok {
				t.Fatalf("blob not present: %v %v", ok, err)
			}
		})
	}
}
