// Package localblob is a blob.Store in a folder on the local disk: the
// embedded default for a single-binary deployment.
//
// Layout under the root folder:
//
//	sha256/ab/<sum>      blobs, fanned out by the first byte of the sum
//	derived/<name>       derived objects (thumbnails, ...)
//	tmp/                 files being written; safe to empty while stopped
//
// The 256 folders of sha256/ are made when the store opens. Until
// 2026-11-29 blobs were fanned out by two bytes (sha256/ab/cd/<sum>):
// mostly one blob per folder below a few hundred thousand blobs, and a
// folder made and fsynced for nearly every upload. Blobs found at such a
// path are still read and deleted; new ones go to the one-byte layout
// (ext4 indexes big folders; a county's millions of photos make some
// thousands per folder).
//
// Every write goes to a temporary file in tmp/, is fsynced, renamed into
// place, and the destination folder is fsynced, so a blob is either fully
// present or absent after a crash.
package localblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"fieldsync/server/blob"
)

var (
	_ blob.Store   = (*Store)(nil)
	_ blob.Adopter = (*Store)(nil)
)

// errNotDir is what opening "a/b" gives when "a" is a file.
var errNotDir error = syscall.ENOTDIR

// Store is a blob.Store rooted at a folder.
type Store struct {
	dir  string
	dirs sync.Map // folders known to exist (and to be durable)
}

// New returns a Store rooted at dir, creating the folder and its layout
// if needed.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("localblob: empty folder name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localblob: %w", err)
	}
	for _, sub := range []string{"sha256", "derived", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("localblob: %w", err)
		}
	}
	s := &Store{dir: abs}
	// The 256 first-level folders of sha256/ are made once, here, rather
	// than each with an fsync of sha256/ on the write that first needs it.
	made := false
	for i := 0; i < 256; i++ {
		d := filepath.Join(abs, "sha256", fmt.Sprintf("%02x", i))
		if err := os.Mkdir(d, 0o755); err == nil {
			made = true
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("localblob: %w", err)
		}
		s.dirs.Store(d, true)
	}
	if made {
		if err := syncDir(filepath.Join(abs, "sha256")); err != nil {
			return nil, fmt.Errorf("localblob: %w", err)
		}
	}
	return s, nil
}

// Dir returns the store's root folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(sum string) string {
	return filepath.Join(s.dir, "sha256", sum[0:2], sum)
}

// legacyPath is where the two-byte layout kept a blob.
func (s *Store) legacyPath(sum string) string {
	return filepath.Join(s.dir, "sha256", sum[0:2], sum[2:4], sum)
}

// existingPath is the path of a present blob: the current layout's, else
// the legacy one's if the blob is there.
func (s *Store) existingPath(sum string) string {
	p := s.blobPath(sum)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Lstat(s.legacyPath(sum)); err == nil {
			return s.legacyPath(sum)
		}
	}
	return p
}

func (s *Store) derivedPath(name string) string {
	return filepath.Join(s.dir, "derived", filepath.FromSlash(name))
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, sum string) (blob.Info, error) {
	if err := blob.CheckSum(sum); err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(s.existingPath(sum))
	if err != nil {
		return blob.Info{}, mapErr("stat", err)
	}
	return blob.Info{SHA256: sum, Size: fi.Size()}, nil
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, sum string, size int64, r io.Reader) error {
	if err := blob.CheckSum(sum); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", blob.ErrSizeMismatch, size)
	}
	if present, err := s.present(ctx, sum, size); err != nil || present {
		return err
	}
	return s.writeFile(ctx, s.blobPath(sum), sum, size, r)
}

// present reports whether the blob is stored; one of another size is an
// ErrSizeMismatch.
func (s *Store) present(ctx context.Context, sum string, size int64) (bool, error) {
	info, err := s.Stat(ctx, sum)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case info.Size != size:
		return false, fmt.Errorf("localblob: %w: present blob has %d bytes, not %d", blob.ErrSizeMismatch, info.Size, size)
	}
	return true, nil
}

// Adopt implements blob.Adopter: a rename into place and an fsync of the
// folder. A file on another file system gives blob.ErrCannotAdopt.
func (s *Store) Adopt(ctx context.Context, sum string, size int64, path string) error {
	if err := blob.CheckSum(sum); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if present, err := s.present(ctx, sum, size); err != nil {
		return err
	} else if present {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("localblob adopt: %w", err)
		}
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("localblob adopt: %w", err)
	}
	if fi.Size() != size {
		return fmt.Errorf("localblob adopt: %w: the file has %d bytes, not %d", blob.ErrSizeMismatch, fi.Size(), size)
	}
	if err := s.moveInto(path, s.blobPath(sum)); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("localblob adopt: %w: %v", blob.ErrCannotAdopt, err)
		}
		return fmt.Errorf("localblob adopt: %w", err)
	}
	return nil
}

// writeFile streams r through a Verifier into a temporary file, then
// fsyncs, renames it to dst and fsyncs dst's folder. If sum is empty the
// content is not hash-checked (derived objects).
func (s *Store) writeFile(ctx context.Context, dst, sum string, size int64, r io.Reader) (err error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return fmt.Errorf("localblob put: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	v := blob.NewVerifier(r, size)
	if _, err = io.Copy(f, ctxReader{ctx, v}); err != nil {
		if verr := v.Err(); verr != nil {
			return fmt.Errorf("localblob put: %w", verr)
		}
		return fmt.Errorf("localblob put: %w", err)
	}
	if err = v.Finish(sum); err != nil {
		return fmt.Errorf("localblob put: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("localblob put: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("localblob put: %w", err)
	}
	if err = s.moveInto(tmp, dst); err != nil {
		return fmt.Errorf("localblob put: %w", err)
	}
	return nil
}

// moveInto renames the file at src to dst, making dst's folders as
// needed, and fsyncs dst's folder. A folder that vanished since it was
// cached as made is made again.
func (s *Store) moveInto(src, dst string) error {
	dir := filepath.Dir(dst)
	if err := s.mkdirAllSync(dir); err != nil {
		return err
	}
	err := os.Rename(src, dst)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(src); serr == nil {
			s.dirs.Delete(dir)
			if err = s.mkdirAllSync(dir); err != nil {
				return err
			}
			err = os.Rename(src, dst)
		}
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirAllSync creates dir and any missing parents below the store root,
// fsyncing each parent whose entries changed so the new folders survive
// a crash.
func (s *Store) mkdirAllSync(dir string) error {
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	if _, err := os.Stat(dir); err == nil {
		s.dirs.Store(dir, true)
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && len(parent) > len(s.dir) {
		if err := s.mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open implements blob.Store. The returned reader is an *os.File.
func (s *Store) Open(ctx context.Context, sum string) (io.ReadSeekCloser, blob.Info, error) {
	if err := blob.CheckSum(sum); err != nil {
		return nil, blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, blob.Info{}, err
	}
	f, err := os.Open(s.existingPath(sum))
	if err != nil {
		return nil, blob.Info{}, mapErr("open", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blob.Info{}, mapErr("open", err)
	}
	return f, blob.Info{SHA256: sum, Size: fi.Size()}, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, sum string) error {
	if err := blob.CheckSum(sum); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, p := range []string{s.blobPath(sum), s.legacyPath(sum)} {
		if err := os.Remove(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("localblob delete: %w", err)
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return fmt.Errorf("localblob delete: %w", err)
		}
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
	return s.writeFile(ctx, s.derivedPath(name), "", size, r)
}

// OpenDerived implements blob.Store. The returned reader is an *os.File.
func (s *Store) OpenDerived(ctx context.Context, name string) (io.ReadSeekCloser, int64, error) {
	if err := blob.CheckDerivedName(name); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.derivedPath(name))
	if err != nil {
		return nil, 0, mapErr("open derived", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, mapErr("open derived", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("localblob open derived: %w: %s is a folder", blob.ErrNotFound, name)
	}
	return f, fi.Size(), nil
}

// Check implements blob.Store: it writes, fsyncs and removes a small file.
func (s *Store) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "check-*")
	if err != nil {
		return fmt.Errorf("localblob check: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.WriteString("ok\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localblob check: %w", err)
	}
	return nil
}

func mapErr(op string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir) {
		return fmt.Errorf("localblob %s: %w", op, blob.ErrNotFound)
	}
	return fmt.Errorf("localblob %s: %w", op, err)
}

// ctxReader stops a long copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
