package upload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing the file's bytes
// [off, off+n) to disk now, without waiting (sync_file_range with
// SYNC_FILE_RANGE_WRITE), so that the fsync at the end of a PATCH finds
// most of them written while the rest of the body was arriving. It is a
// hint: it makes nothing durable (only the fsync does), and errors are
// ignored.
func startWriteback(f PartFile, off, n int64) {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
