package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tusClient is a small tus 1.0 client (core protocol and the creation
// extension): the one client the benchmark points at every upload
// endpoint, so that they are compared with the same client. After a failed
// PATCH it asks the server for the offset (HEAD) and resumes from there.
type tusClient struct {
	hc       *http.Client
	endpoint string            // creation URL, e.g. http://127.0.0.1:1080/files/
	header   map[string]string // added to every request (Authorization)
	// chunk bounds one PATCH body (0: the rest of the file).
	chunk int
	// attempts bounds the PATCH requests of one upload (default 50).
	attempts int
	// sent counts request body bytes the transport read, every attempt.
	sent atomic.Int64
}

func (t *tusClient) do(ctx context.Context, method, u string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range t.header {
		req.Header.Set(k, v)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return t.hc.Do(req)
}

// countingBody counts what the transport reads of a request body.
type countingBody struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// tusMetadata encodes Upload-Metadata: "key base64(value)" pairs.
func tusMetadata(meta map[string]string) string {
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(meta[k])))
	}
	return strings.Join(parts, ",")
}

// upload creates an upload for data and sends it, resuming after errors.
// A creation that fails on the network is tried again (at most 10 times;
// a lost answer leaves an orphan upload the server expires).
func (t *tusClient) upload(ctx context.Context, data []byte, meta map[string]string) error {
	var resp *http.Response
	var err error
	for try := 0; try < 10; try++ {
		if try > 0 {
			if err := sleepCtx(ctx, time.Duration(try)*20*time.Millisecond); err != nil {
				return err
			}
		}
		resp, err = t.do(ctx, http.MethodPost, t.endpoint, nil, map[string]string{
			"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": tusMetadata(meta),
		})
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("tus create: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("tus create: HTTP %d", resp.StatusCode)
	}
	loc, err := url.Parse(t.endpoint)
	if err != nil {
		return err
	}
	if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("tus create: bad Location %q", resp.Header.Get("Location"))
	}
	target := loc.String()
	attempts := t.attempts
	if attempts <= 0 {
		attempts = 50
	}
	offset := int64(0)
	var lastErr error
	for try := 0; offset < int64(len(data)); try++ {
		if try >= attempts {
			return fmt.Errorf("tus: %d of %d bytes after %d attempts: %w", offset, len(data), attempts, lastErr)
		}
		if try > 0 {
			if err := sleepCtx(ctx, time.Duration(min(try, 10))*20*time.Millisecond); err != nil {
				return err
			}
			if offset, err = t.offset(ctx, target); err != nil {
				lastErr = err
				continue
			}
			if offset >= int64(len(data)) {
				break
			}
		}
		end := int64(len(data))
		if t.chunk > 0 {
			end = min(end, offset+int64(t.chunk))
		}
		body := &countingBody{r: bytes.NewReader(data[offset:end]), n: &t.sent}
		resp, err := t.do(ctx, http.MethodPatch, target, body, map[string]string{
			"Upload-Offset": strconv.FormatInt(offset, 10), "Content-Type": "application/offset+octet-stream",
			"Content-Length": strconv.FormatInt(end-offset, 10),
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = err
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			lastErr = fmt.Errorf("tus patch: HTTP %d", resp.StatusCode)
			continue
		}
		n, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		if err != nil {
			return fmt.Errorf("tus patch: bad Upload-Offset: %w", err)
		}
		offset = n
	}
	return nil
}

// offset asks the server how much of an upload it has (HEAD).
func (t *tusClient) offset(ctx context.Context, target string) (int64, error) {
	resp, err := t.do(ctx, http.MethodHead, target, nil, nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return 0, fmt.Errorf("tus head: HTTP %d", resp.StatusCode)
	}
	return strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// uploadAll uploads every photo with workers concurrent uploads and
// returns the throughput in MB/s (10^6 bytes) of file bytes.
func uploadAll(ctx context.Context, t *tusClient, photos []Photo, workers int) (float64, time.Duration, error) {
	jobs := make(chan Photo)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	var total int64
	for _, p := range photos {
		total += int64(len(p.Data))
	}
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				if err := t.upload(ctx, p.Data, map[string]string{"filename": p.SHA256[:16] + ".jpg", "filetype": "image/jpeg", "sha256": p.SHA256}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var failed error
feed:
	for _, p := range photos {
		select {
		case jobs <- p:
		case failed = <-errs:
			break feed
		case <-ctx.Done():
			failed = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		return 0, took, failed
	}
	if took <= 0 {
		return 0, took, errors.New("no time passed")
	}
	return float64(total) / 1e6 / took.Seconds(), took, nil
}
