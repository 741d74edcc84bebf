package mobileclient

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"fieldsync/syncproto"
)

// request is one API call, retried as a whole.
type request struct {
	name   string // for error messages: "push", "pull", "enroll"
	path   string // e.g. "/api/v1/sync/push"
	body   []byte // encoded once; every attempt sends the same bytes
	gzip   bool   // body is gzip-compressed
	token  string // bearer token, "" for none
	status []int  // accepted success statuses (default: any 2xx)
	// version is the protocol version the body speaks (default
	// syncproto.ProtocolVersion), sent in the Fieldsync-Protocol header.
	version int
}

// counters receives the wire byte counts and retry notes of a call.
type counters struct {
	sent, received int64
	retries        int
	errors         []string
}

// merge adds o's counts to c and clears o.
func (c *counters) merge(o *counters) {
	c.sent += o.sent
	c.received += o.received
	c.retries += o.retries
	c.errors = append(c.errors, o.errors...)
	*o = counters{}
}

// A gzip.Writer holds some 800 KB of compressor state: writers are pooled
// (after Reset one writes the same bytes as a new one), and so are the
// buffers bodies are encoded into. Request bodies are compressed at
// gzip.BestCompression: a device sends small bodies over slow links, and a
// push of 20 visits takes some 35 µs more than at the default level for
// about 1.5% fewer bytes.
var (
	gzipWriters = sync.Pool{New: func() any {
		zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestCompression)
		return zw
	}}
	bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// maxPooledBuffer bounds the buffers kept for reuse.
const maxPooledBuffer = 1 << 20

// encodeBody encodes v as syncproto.Encode does (JSON and a newline,
// gzip-compressed when gz, here at gzip.BestCompression) and returns a
// copy the caller owns: a request keeps its body for every retry.
func encodeBody(v any, gz bool) ([]byte, error) {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			bodyBuffers.Put(buf)
		}
	}()
	if !gz {
		if err := encodeJSON(buf, v); err != nil {
			return nil, err
		}
		return bytes.Clone(buf.Bytes()), nil
	}
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(buf)
	if err := encodeJSON(zw, v); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return bytes.Clone(buf.Bytes()), nil
}

// encodeJSON writes v and a newline as a json.Encoder does. A push body
// is written by hand, the same bytes: its mutations are the outbox's
// bodies, compact JSON as json.Marshal wrote them, and the encoder would
// scan and compact each one again (a fifth of the device's CPU in p8).
func encodeJSON(w io.Writer, v any) error {
	p, ok := v.(pushBody)
	if !ok {
		if err := json.NewEncoder(w).Encode(v); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		return nil
	}
	head, err := json.Marshal(struct {
		ProtocolVersion int    `json:"protocol_version"`
		DeviceID        string `json:"device_id"`
	}{p.ProtocolVersion, p.DeviceID})
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	var health []byte
	if p.Health != nil {
		if health, err = json.Marshal(p.Health); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.Write(head[:len(head)-1])
	if p.Mutations == nil {
		bw.WriteString(`,"mutations":null`)
	} else {
		bw.WriteString(`,"mutations":[`)
		for i, m := range p.Mutations {
			if i > 0 {
				bw.WriteByte(',')
			}
			bw.Write(m)
		}
		bw.WriteByte(']')
	}
	if health != nil {
		bw.WriteString(`,"health":`)
		bw.Write(health)
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

// call sends r, retrying network errors, 5xx and 429 with exponential
// backoff and full jitter, and returns the decoded success body.
func (c *Client) call(ctx context.Context, r request, cnt *counters) ([]byte, error) {
	if c.server == "" {
		return nil, fmt.Errorf("%s: no server URL: %w", r.name, ErrNotEnrolled)
	}
	b := c.opts.Backoff
	var lastErr error
	var retryAfter time.Duration
	for attempt := 1; attempt <= b.MaxAttempts; attempt++ {
		if attempt > 1 {
			cnt.retries++
			cnt.errors = append(cnt.errors, fmt.Sprintf("%s attempt %d: %v", r.name, attempt-1, lastErr))
			if err := sleep(ctx, backoffDelay(b, attempt-1, retryAfter)); err != nil {
				return nil, fmt.Errorf("%s: %w (last error: %v)", r.name, err, lastErr)
			}
		}
		retryAfter = 0
		status, hdr, data, err := c.roundTrip(ctx, r, cnt)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", r.name, ctx.Err())
			}
			lastErr = err
			continue
		}
		if ok(status, r.status) {
			return data, nil
		}
		se := parseError(status, data)
		switch {
		case status == http.StatusUnauthorized || se.Code == syncproto.CodeUnauthorized:
			return nil, fmt.Errorf("%s: %w: %w", r.name, ErrUnauthorized, se)
		case status == http.StatusUpgradeRequired || se.Code == syncproto.CodeUnsupportedVersion:
			return nil, fmt.Errorf("%s: %w: %w", r.name, ErrUnsupportedVersion, se)
		case se.Code == syncproto.CodeSequenceGap:
			return nil, fmt.Errorf("%s: %w", r.name, &SequenceGapError{Expected: detailInt(se.Details, "expected"), Server: se})
		case se.Code == syncproto.CodeSequenceReused:
			return nil, fmt.Errorf("%s: %w", r.name, &SequenceReusedError{Seq: detailInt(se.Details, "seq"), LastSeq: detailInt(se.Details, "last_seq"), Server: se})
		case status >= 500 || status == http.StatusTooManyRequests:
			lastErr = fmt.Errorf("HTTP %d: %w", status, se)
			retryAfter = parseRetryAfter(hdr.Get("Retry-After"))
			continue
		default:
			return nil, fmt.Errorf("%s: %w: HTTP %d: %w", r.name, ErrServer, status, se)
		}
	}
	return nil, fmt.Errorf("%s: %w after %d attempts: %w", r.name, ErrUnavailable, b.MaxAttempts, lastErr)
}

func ok(status int, want []int) bool {
	if len(want) == 0 {
		return status >= 200 && status < 300
	}
	for _, s := range want {
		if s == status {
			return true
		}
	}
	return false
}

// roundTrip performs one attempt and reads the whole (decompressed) body.
// Byte counts are what crossed the wire: the request body as sent and the
// response body before decompression.
func (c *Client) roundTrip(ctx context.Context, r request, cnt *counters) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.server+r.path, bytes.NewReader(r.body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	// Set explicitly (instead of relying on the transport's transparent
	// decompression) so that the compressed bytes can be counted.
	req.Header.Set("Accept-Encoding", "gzip")
	version := r.version
	if version == 0 {
		version = syncproto.ProtocolVersion
	}
	req.Header.Set("Fieldsync-Protocol", strconv.Itoa(version))
	req.Header.Set("User-Agent", c.userAgent())
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	cnt.sent += int64(len(r.body))
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	cr := &countingReader{r: resp.Body}
	var body io.Reader = cr
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(cr)
		if err != nil {
			cnt.received += cr.n
			if errors.Is(err, io.EOF) {
				// An empty gzip body.
				return resp.StatusCode, resp.Header, nil, nil
			}
			return 0, nil, nil, fmt.Errorf("gzip response: %w", err)
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, syncproto.MaxMessageBytes+1))
	cnt.received += cr.n
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	if len(data) > syncproto.MaxMessageBytes {
		return 0, nil, nil, fmt.Errorf("response over %d bytes: %w", syncproto.MaxMessageBytes, syncproto.ErrTooLarge)
	}
	return resp.StatusCode, resp.Header, data, nil
}

func (c *Client) userAgent() string {
	ua := "fieldsync-mobileclient"
	if c.opts.AppVersion != "" {
		ua += "/" + c.opts.AppVersion
	}
	return ua
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// parseError reads an error body, or makes one from the status when the
// body is not a fieldsync error (a proxy's page, say).
func parseError(status int, data []byte) *syncproto.Error {
	if len(bytes.TrimSpace(data)) > 0 {
		if e, err := syncproto.DecodeError(bytes.NewReader(data)); err == nil {
			return e
		}
	}
	msg := http.StatusText(status)
	if s := bytes.TrimSpace(data); len(s) > 0 && len(s) < 200 {
		msg = string(s)
	}
	return &syncproto.Error{Code: syncproto.CodeForStatus(status), Message: msg}
}

// detailInt reads an integer detail decoded from JSON (a float64, a
// json.Number or a string).
func detailInt(details map[string]any, key string) int64 {
	switch v := details[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

func parseRetryAfter(s string) time.Duration {
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(s); err == nil {
		return time.Until(t)
	}
	return 0
}

// backoffDelay returns the wait before retry number n (1 for the first
// retry): random in [0, min(Max, Base·2^(n-1))], but at least what the
// server asked for in Retry-After (capped at Max).
func backoffDelay(b Backoff, n int, retryAfter time.Duration) time.Duration {
	bound := b.Max
	if n-1 < 32 {
		if d := b.Base << (n - 1); d > 0 && d < b.Max {
			bound = d
		}
	}
	d := rand.N(bound + 1)
	if retryAfter > d {
		d = min(retryAfter, b.Max)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
