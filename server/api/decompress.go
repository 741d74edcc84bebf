package api

import (
	"bytes"
	"compress/gzip"
	"io"
	"sync"

	"github.com/labstack/echo/v4"
)

// maxBufferedGzip is the largest gzip body (by Content-Length) that
// decompress reads whole before the handler runs; larger bodies, and
// bodies of unknown length, are decompressed as they arrive.
const maxBufferedGzip = 1 << 20

// gzipReaders keeps gzip readers (each with its 32 KiB window and
// decoder tables, about 45 KB) for reuse.
var gzipReaders = sync.Pool{New: func() any { return new(gzip.Reader) }}

// decompress undoes Content-Encoding: gzip, as echo's Decompress does,
// but holds a gzip reader only while the handler reads: a small body is
// first read whole in its compressed form (a push of 20 visits is a few
// KB), and the reader is taken from the pool at the first Read and given
// back at the end of the stream. With echo's middleware every request in
// flight held a reader from before its body arrived, over a slow link
// for as long as the body took: 200 pushes held 9 MB of them, and at
// that concurrency the pool rarely had one to give, so each push also
// allocated a new one.
func decompress(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Header.Get(echo.HeaderContentEncoding) != "gzip" {
			return next(c)
		}
		body := &gunzipBody{src: r.Body, orig: r.Body}
		if n := r.ContentLength; n >= 0 && n <= maxBufferedGzip {
			raw := make([]byte, n)
			if _, err := io.ReadFull(r.Body, raw); err != nil {
				// The handler sees the failed read as it would have.
				body.err = err
			}
			body.src = bytes.NewReader(raw)
		}
		r.Body = body
		defer body.Close()
		return next(c)
	}
}

// gunzipBody is a request body decompressed from src with a pooled
// gzip reader taken at the first Read and released at the end of the
// stream, on an error or at Close.
type gunzipBody struct {
	src  io.Reader
	orig io.Closer
	gr   *gzip.Reader
	err  error
}

func (b *gunzipBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.gr == nil {
		gr := gzipReaders.Get().(*gzip.Reader)
		if err := gr.Reset(b.src); err != nil {
			// io.EOF: an empty body, which reads as empty.
			gzipReaders.Put(gr)
			b.err = err
			return 0, err
		}
		b.gr = gr
	}
	n, err := b.gr.Read(p)
	if err != nil {
		b.err = err
		b.release()
	}
	return n, err
}

func (b *gunzipBody) release() {
	if b.gr != nil {
		b.gr.Close()
		gzipReaders.Put(b.gr)
		b.gr = nil
	}
}

// Close releases the reader (idempotent) and closes the request's body.
func (b *gunzipBody) Close() error {
	b.release()
	if b.err == nil {
		b.err = io.ErrClosedPipe
	}
	return b.orig.Close()
}
