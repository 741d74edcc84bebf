package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"fieldsync/mobileclient"
	"fieldsync/syncproto"
)

// wireDevice speaks the pull protocol directly (no device database), to
// time the server's side of a pull without the device's local commit.
// Its requests are the ones mobileclient sends: gzip bodies, gzip
// answers, the protocol header, a bearer token.
type wireDevice struct {
	base     string
	deviceID string
	token    string
	hc       *http.Client
}

// enrollWire enrolls a wire device for a user, connecting from its own
// loopback source address.
func enrollWire(ctx context.Context, srv *server, userID int64, idx int) (*wireDevice, error) {
	code, err := srv.admin.enrollmentCode(ctx, userID)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: sourceIP(idx)}}
	w := &wireDevice{base: srv.url, hc: &http.Client{Timeout: time.Minute,
		Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 1, DisableCompression: true}}}
	body, _ := json.Marshal(map[string]string{"code": code, "name": "fieldsim wire device"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+mobileclient.EnrollPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var er struct {
		DeviceID string `json:"device_id"`
		Token    string `json:"token"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &er) != nil || er.Token == "" {
		return nil, fmt.Errorf("enroll wire device: HTTP %d: %s", resp.StatusCode, data)
	}
	w.deviceID, w.token = er.DeviceID, er.Token
	return w, nil
}

func (w *wireDevice) close() { w.hc.CloseIdleConnections() }

// pull sends one pull and returns the page and the bytes on the wire
// (request and response bodies, compressed).
func (w *wireDevice) pull(ctx context.Context, cursor string) (*syncproto.PullResponse, int64, error) {
	var body bytes.Buffer
	req := syncproto.PullRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: w.deviceID, Cursor: cursor, MaxBytes: syncproto.DefaultPullBytes}
	if err := syncproto.Encode(&body, req, true); err != nil {
		return nil, 0, err
	}
	n := int64(body.Len())
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+mobileclient.PullPath, &body)
	if err != nil {
		return nil, 0, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Content-Encoding", "gzip")
	hr.Header.Set("Accept-Encoding", "gzip")
	hr.Header.Set("Fieldsync-Protocol", strconv.Itoa(syncproto.ProtocolVersion))
	hr.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.hc.Do(hr)
	if err != nil {
		return nil, n, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, syncproto.MaxMessageBytes))
	n += int64(len(raw))
	if err != nil {
		return nil, n, err
	}
	data := raw
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, n, err
		}
		if data, err = io.ReadAll(io.LimitReader(zr, syncproto.MaxMessageBytes)); err != nil {
			return nil, n, err
		}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, n, fmt.Errorf("pull: HTTP %d: %s", resp.StatusCode, data)
	}
	pr, err := syncproto.DecodePullResponse(bytes.NewReader(data))
	return pr, n, err
}

// pullAll pulls from cursor until the server has nothing more (at most
// maxPages pages) and returns the last cursor and the ops received.
func (w *wireDevice) pullAll(ctx context.Context, cursor string, maxPages int) (string, int, error) {
	ops := 0
	for page := 0; page < maxPages; page++ {
		pr, _, err := w.pull(ctx, cursor)
		if err != nil {
			return cursor, ops, err
		}
		ops += len(pr.Ops)
		cursor = pr.Cursor
		if !pr.HasMore {
			return cursor, ops, nil
		}
	}
	return cursor, ops, fmt.Errorf("pull: still has_more after %d pages", maxPages)
}

// noopPulls times n pulls from a cursor at the head of the log, after
// warm unmeasured ones; each must bring nothing.
func (w *wireDevice) noopPulls(ctx context.Context, cursor string, warm, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := -warm; i < n; i++ {
		t0 := time.Now()
		pr, _, err := w.pull(ctx, cursor)
		took := time.Since(t0)
		if err != nil {
			return out, err
		}
		if len(pr.Ops) != 0 || pr.HasMore {
			return out, fmt.Errorf("a no-op pull brought %d ops (has_more %v)", len(pr.Ops), pr.HasMore)
		}
		cursor = pr.Cursor
		if i >= 0 {
			out = append(out, took)
		}
	}
	return out, nil
}

// snapshot pulls a fresh copy (from an empty cursor) and returns the
// cursor, the households and the forms it brought.
func (w *wireDevice) snapshot(ctx context.Context, maxPages int) (string, []syncproto.Household, []syncproto.FormDef, error) {
	var hs []syncproto.Household
	var forms []syncproto.FormDef
	cursor := ""
	for page := 0; page < maxPages; page++ {
		pr, _, err := w.pull(ctx, cursor)
		if err != nil {
			return cursor, nil, nil, err
		}
		for _, op := range pr.Ops {
			switch {
			case op.Op == syncproto.OpPut && op.Household != nil:
				hs = append(hs, *op.Household)
			case op.Op == syncproto.OpPut && op.Form != nil:
				forms = append(forms, *op.Form)
			}
		}
		cursor = pr.Cursor
		if !pr.HasMore {
			return cursor, hs, forms, nil
		}
	}
	return cursor, nil, nil, fmt.Errorf("pull: still has_more after %d pages", maxPages)
}

// push sends one batch of mutations and returns the server's answer.
func (w *wireDevice) push(ctx context.Context, muts []syncproto.Mutation) (*syncproto.PushResponse, error) {
	var body bytes.Buffer
	req := syncproto.PushRequest{ProtocolVersion: syncproto.ProtocolVersion, DeviceID: w.deviceID, Mutations: muts}
	if err := syncproto.Encode(&body, req, true); err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+mobileclient.PushPath, &body)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Content-Encoding", "gzip")
	hr.Header.Set("Fieldsync-Protocol", strconv.Itoa(syncproto.ProtocolVersion))
	hr.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.hc.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rd io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, err
		}
		rd = zr
	}
	data, err := io.ReadAll(io.LimitReader(rd, syncproto.MaxMessageBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("push: HTTP %d: %s", resp.StatusCode, data)
	}
	return syncproto.DecodePushResponse(bytes.NewReader(data))
}
