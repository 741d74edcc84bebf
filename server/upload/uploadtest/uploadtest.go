// Package uploadtest helps evidence tests: field devices that push visits
// referencing files over the real HTTP API, and a small tus client that
// can be cut off, resumed and made to misbehave.
package uploadtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/upload"
	"fieldsync/syncproto"
)

// Sum is the lowercase hex SHA-256 of data.
func Sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Device is an enrolled field device of a new field worker.
type Device struct {
	Env   *servertest.Env
	User  domain.User
	ID    string
	Token string
	seq   int64
}

// NewDevice creates a field worker assigned to places and enrolls a
// device for them.
func NewDevice(t testing.TB, env *servertest.Env, name string, places ...string) *Device {
	t.Helper()
	u := env.CreateUser(t, name, domain.RoleFieldWorker, places...)
	id, tok := env.Device(t, u.ID)
	return &Device{Env: env, User: u, ID: id, Token: tok}
}

// Household adds a household under place.
func Household(t testing.TB, env *servertest.Env, id, place string) {
	t.Helper()
	env.AddHouseholds(t, syncproto.Household{ID: id, PlaceCode: place, Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"杨绍华"`)}})
}

// Ref is an evidence reference to data in slot.
func Ref(data []byte, slot string) syncproto.EvidenceRef {
	return syncproto.EvidenceRef{SHA256: Sum(data), Size: int64(len(data)), MediaType: "image/jpeg", Slot: slot}
}

// WaterCellarForm is the template the helpers record visits with: one
// slot, "progress", needing one photo; GPS accuracy limit 30 m.
const WaterCellarForm = "water_cellar_progress"

// Visit is a valid water-cellar visit of a household at a point inside
// group G11 of the servertest places, recorded at 10:00 China time on
// 1 March 2026, referencing refs.
func Visit(id, householdID string, refs ...syncproto.EvidenceRef) syncproto.Visit {
	return syncproto.Visit{
		ID: id, HouseholdID: householdID, FormID: WaterCellarForm, FormVersion: 1,
		Answers: map[string]json.RawMessage{
			"site_name": json.RawMessage(`"塘子 1号水窖"`), "capacity_m3": json.RawMessage(`24`),
			"stage": json.RawMessage(`"built"`), "due_date": json.RawMessage(`"2026-11-30"`),
		},
		Point:      &syncproto.Point{Lon: 103.15, Lat: 25.15},
		AccuracyM:  8,
		DeviceTime: time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("", 8*3600)),
		Evidence:   refs,
	}
}

// Push sends mutations (Seq is filled in) and fails the test unless each
// is applied.
func (d *Device) Push(t testing.TB, muts ...syncproto.Mutation) *syncproto.PushResponse {
	t.Helper()
	for i := range muts {
		d.seq++
		muts[i].Seq = d.seq
	}
	req := syncproto.PushRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: d.ID, Mutations: muts}
	var resp syncproto.PushResponse
	if st := d.JSON(t, http.MethodPost, "/api/v1/sync/push", req, &resp); st != http.StatusOK {
		t.Fatalf("push: status %d", st)
	}
	for _, r := range resp.Results {
		if r.Status != syncproto.StatusApplied {
			t.Fatalf("push: mutation %d %s: %s %s", r.Seq, r.Status, r.Code, r.Message)
		}
	}
	return &resp
}

// PushVisit pushes one visit.create.
func (d *Device) PushVisit(t testing.TB, v syncproto.Visit) {
	t.Helper()
	d.Push(t, syncproto.Mutation{Kind: syncproto.KindVisitCreate, Visit: &v})
}

// JSON sends a JSON request with the device token and decodes a JSON
// answer into out (if not nil). It returns the status.
func (d *Device) JSON(t testing.TB, method, path string, body, out any) int {
	t.Helper()
	return DoJSON(t, d.Env.URL, d.Token, method, path, body, out)
}

// DoJSON sends a JSON request with a bearer token.
func DoJSON(t testing.TB, base, token, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// Client is a small tus 1.0 client.
type Client struct {
	// Base is the server URL ("http://127.0.0.1:1234").
	Base  string
	Token string
	// HTTP defaults to a client without keep-alive reuse surprises.
	HTTP *http.Client
}

// Response is what a tus request answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Error is the decoded error body, if any.
	Error syncproto.Error
}

// Offset is the Upload-Offset header, or -1.
func (r *Response) Offset() int64 {
	n, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Do sends one tus request: Tus-Resumable and the token are added.
func (c *Client) Do(ctx context.Context, method, url string, hdr map[string]string, body io.Reader) (*Response, error) {
	if !strings.HasPrefix(url, "http") {
		url = c.Base + url
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	switch b := body.(type) {
	case *bytes.Reader:
		req.ContentLength = int64(b.Len())
	case *countingReader:
		req.ContentLength = int64(b.r.Len())
	}
	req.Header.Set("Tus-Resumable", upload.TusVersion)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, Header: resp.Header}
	out.Body, err = io.ReadAll(resp.Body)
	if err != nil {
		return out, err
	}
	if resp.StatusCode >= 400 && len(out.Body) > 0 {
		_ = json.Unmarshal(out.Body, &out.Error)
	}
	return out, nil
}

// Meta is the Upload-Metadata for data.
func Meta(data []byte) string {
	return upload.EncodeMetadata(map[string]string{upload.MetaSHA256: Sum(data), upload.MetaFiletype: "image/jpeg", upload.MetaFilename: "photo.jpg"})
}

// Create starts an upload of data (without data) and returns the answer.
func (c *Client) Create(ctx context.Context, data []byte, hdr map[string]string) (*Response, error) {
	h := map[string]string{"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": Meta(data)}
	for k, v := range hdr {
		h[k] = v
	}
	return c.Do(ctx, http.MethodPost, "/api/v1/uploads/", h, nil)
}

// Checksum is the Upload-Checksum header for chunk.
func Checksum(chunk []byte) string {
	s := sha256.Sum256(chunk)
	return "sha256 " + base64.StdEncoding.EncodeToString(s[:])
}

// Patch sends chunk at offset.
func (c *Client) Patch(ctx context.Context, url string, offset int64, chunk []byte, hdr map[string]string) (*Response, error) {
	resp, _, err := c.patch(ctx, url, offset, chunk, hdr)
	return resp, err
}

// countingReader counts the bytes the transport took. The count is
// atomic: a server that answers before it has read the whole body (a
// full disk, a stale offset) leaves the transport's writer goroutine
// still reading the body while the caller reads the count.
type countingReader struct {
	r *bytes.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// ExpectContinue is the body size from which Patch asks the server to
// confirm (100 Continue) before the body is sent, so that a PATCH at a
// stale offset gets its 409 without crossing the link; the transport
// needs an ExpectContinueTimeout.
const ExpectContinue = 64 << 10

func (c *Client) patch(ctx context.Context, url string, offset int64, chunk []byte, hdr map[string]string) (*Response, int64, error) {
	h := map[string]string{"Upload-Offset": strconv.FormatInt(offset, 10), "Content-Type": upload.OffsetContentType}
	if len(chunk) >= ExpectContinue {
		h["Expect"] = "100-continue"
	}
	for k, v := range hdr {
		h[k] = v
	}
	body := &countingReader{r: bytes.NewReader(chunk)}
	resp, err := c.Do(ctx, http.MethodPatch, url, h, body)
	return resp, body.n.Load(), err
}

// Head asks for the offset.
func (c *Client) Head(ctx context.Context, url string) (*Response, error) {
	return c.Do(ctx, http.MethodHead, url, nil, nil)
}

// Stats counts what Upload sent.
type Stats struct {
	Requests int
	// BodyBytes are PATCH body bytes the transport took (written to its
	// socket, whether or not they crossed the link before a cut).
	BodyBytes int64
	// Failures are requests that failed (cut) and were resumed; Errors
	// says how.
	Failures int
	Errors   []string
}

// Upload uploads data to a created upload at url: PATCH the rest in one
// request (or in chunks of chunk bytes with checksums, if chunk > 0);
// after a failure, HEAD for the offset and go on. It gives up after
// maxFailures failures in a row.
func (c *Client) Upload(ctx context.Context, url string, data []byte, chunk int, maxFailures int) (Stats, error) {
	var st Stats
	var off int64
	fails := 0
	for {
		end := int64(len(data))
		var hdr map[string]string
		if chunk > 0 {
			end = min(end, off+int64(chunk))
			hdr = map[string]string{"Upload-Checksum": Checksum(data[off:end])}
		}
		st.Requests++
		resp, took, err := c.patch(ctx, url, off, data[off:end], hdr)
		st.BodyBytes += took
		if err == nil && resp.Status == http.StatusNoContent {
			fails = 0
			off = resp.Offset()
			if off == int64(len(data)) {
				return st, nil
			}
			continue
		}
		// Like tus-js-client: 409 (offset changed under us) and 5xx are
		// retried after a HEAD; other 4xx are final.
		if err == nil && resp.Status < 500 && resp.Status != http.StatusConflict {
			return st, fmt.Errorf("PATCH at %d: %d %s", off, resp.Status, resp.Body)
		}
		st.Failures++
		if err != nil {
			st.Errors = append(st.Errors, fmt.Sprintf("PATCH at %d: %v", off, err))
		} else {
			st.Errors = append(st.Errors, fmt.Sprintf("PATCH at %d: %d %s", off, resp.Status, resp.Body))
		}
		if fails++; fails > maxFailures {
			return st, fmt.Errorf("PATCH at %d: giving up after %d failures: %v", off, fails, err)
		}
		for {
			st.Requests++
			h, herr := c.Head(ctx, url)
			if herr == nil && h.Status == http.StatusOK {
				off = h.Offset()
				break
			}
			if herr == nil && h.Status < 500 {
				return st, fmt.Errorf("HEAD: %d", h.Status)
			}
			if fails++; fails > maxFailures {
				return st, fmt.Errorf("HEAD: giving up: %v", herr)
			}
		}
		if off == int64(len(data)) {
			return st, nil
		}
	}
}
