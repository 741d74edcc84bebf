package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"fieldsync/server/auth"
	"fieldsync/server/blob"
	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/store"
	"fieldsync/server/upload"
	"fieldsync/syncproto"
)

// addRoute registers one documented route (see register).
type addRoute func(method, path, auth, tag, summary string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc)

// authUserOrDevice: a signed-in user (session) or an enrolled device.
const authUserOrDevice = "user_or_device"

// EvidenceConfig tunes the evidence endpoints. The zero value means the
// defaults.
type EvidenceConfig struct {
	// MaxUploadBytes is the largest upload accepted (default
	// syncproto.MaxEvidenceBytes).
	MaxUploadBytes int64
	// UploadTTL is how long an unfinished upload lives after its last
	// PATCH (default 24 h).
	UploadTTL time.Duration
	// BlobTimeout bounds each blob-store call (default 2 min for uploads,
	// 30 s to open a blob for download).
	BlobTimeout time.Duration
	// AnalyseDelay is how long a stored photo's analysis may wait for
	// uploads in progress (default 10 s; see server/upload/analyse.go).
	AnalyseDelay time.Duration
}

// MaxMissingQuery is the most hashes one missing-blob request may ask
// about.
const MaxMissingQuery = 1000

// evidenceState is the server's evidence state (nil when evidence is not
// configured).
type evidenceState struct {
	store   store.Evidence
	uploads *upload.Handler
	cfg     EvidenceConfig
}

func (s *Server) ev() *evidenceState { return s.evidence }

// Uploads returns the resumable upload handler (nil if the server has no
// blob store). main runs its Janitor; tests call ExpireUploads.
func (s *Server) Uploads() *upload.Handler {
	if st := s.ev(); st != nil {
		return st.uploads
	}
	return nil
}

// evidenceConfig is the evidence configuration.
func (s *Server) evidenceConfig() EvidenceConfig { return s.cfg.Evidence }

// registerEvidence adds the evidence routes: the missing-blob check, the
// tus upload endpoint, downloads and thumbnails, per-visit evidence and
// the completeness list.
func (s *Server) registerEvidence(add addRoute) {
	es := s.store
	if s.cfg.Blobs == nil || s.cfg.UploadDir == "" {
		s.log.Warn("evidence endpoints disabled: Blobs/UploadDir are not configured")
		return
	}
	cfg := s.evidenceConfig()
	up, err := upload.New(upload.Config{
		Store: es, Blobs: s.cfg.Blobs, Dir: s.cfg.UploadDir, BasePath: APIPrefix + "/uploads/",
		PublicURL: s.cfg.UploadURL,
		MaxSize:   cfg.MaxUploadBytes, TTL: cfg.UploadTTL, BlobTimeout: cfg.BlobTimeout,
		AnalyseDelay: cfg.AnalyseDelay, Now: s.cfg.Now, Logger: s.log,
	})
	if err != nil {
		s.log.Error("evidence endpoints disabled", "err", err)
		return
	}
	s.evidence = &evidenceState{store: es, uploads: up, cfg: cfg}

	p := APIPrefix
	add(http.MethodPost, p+"/evidence/missing", authDevice, "evidence", "Which of these blob hashes the server lacks (git-lfs style batch check)", s.evidenceMissing)
	add(http.MethodGet, p+"/evidence/gaps", authSupervisor, "evidence", "Visits under a place whose evidence is incomplete, and what each lacks", s.evidenceGaps)

	either := s.authUserOrDevice()
	s.addRaw(http.MethodGet, p+"/evidence/:sha256", authUserOrDevice, "evidence", "Download a blob (Range supported) referenced by a visit in the caller's scope", s.evidenceDownload, either)
	s.addRaw(http.MethodGet, p+"/evidence/:sha256/thumb", authUserOrDevice, "evidence", "A JPEG thumbnail (256 px) of an image blob in the caller's scope", s.evidenceThumb, either)
	s.addRaw(http.MethodGet, p+"/visits/:id/evidence", authUserOrDevice, "evidence", "A visit's evidence: slots, references with presence and flags", s.visitEvidence, either)

	// tus 1.0: every response carries Tus-Resumable, so the tus check runs
	// before authentication.
	pre := s.tusPreflight(up)
	dev := s.authenticate(authDevice)
	for _, path := range []string{p + "/uploads", p + "/uploads/"} {
		s.addRaw(http.MethodOptions, path, authNone, "uploads", "tus discovery: version, extensions, maximum size, checksum algorithm", s.tusOptions(up))
		s.addRaw(http.MethodPost, path, authDevice, "uploads", "tus creation (and creation-with-upload); Upload-Metadata must carry sha256", s.tusCreate(up), pre, dev)
	}
	id := p + "/uploads/:id"
	s.addRaw(http.MethodOptions, id, authNone, "uploads", "tus discovery", s.tusOptions(up))
	s.addRaw(http.MethodHead, id, authDevice, "uploads", "tus: the offset received so far", s.tusHead(up), pre, dev)
	s.addRaw(http.MethodPatch, id, authDevice, "uploads", "tus: append bytes at Upload-Offset (Upload-Checksum: sha256 optional)", s.tusPatch(up), pre, dev)
	s.addRaw(http.MethodPost, id, authDevice, "uploads", "tus: PATCH for clients that send X-HTTP-Method-Override", s.tusOverride(up), pre, dev)
	s.addRaw(http.MethodDelete, id, authDevice, "uploads", "tus termination: discard an upload", s.tusDelete(up), pre, dev)
}

// addRaw registers a documented route with its own middleware chain (in
// order, outermost first), for routes that need more than one auth level
// or middleware before authentication.
func (s *Server) addRaw(method, path, authLevel, tag, summary string, h echo.HandlerFunc, mws ...echo.MiddlewareFunc) {
	s.routes = append(s.routes, route{RouteDoc{method, path, summary, authLevel, tag}, h})
	s.e.Add(method, path, h, mws...)
}

// authUserOrDevice accepts a device token or a user session.
func (s *Server) authUserOrDevice() echo.MiddlewareFunc {
	asDevice, asUser := s.authenticate(authDevice), s.authenticate(authUser)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		d, u := asDevice(next), asUser(next)
		return func(c echo.Context) error {
			if tok := bearer(c.Request()); tok != "" {
				_, err := s.store.DeviceByToken(c.Request().Context(), auth.HashToken(tok))
				if err == nil || errors.Is(err, domain.ErrRevoked) {
					return d(c)
				}
			}
			return u(c)
		}
	}
}

// tusPreflight sets Tus-Resumable and checks the client's version (412)
// before authentication. A request refused because its device was
// revoked discards that device's unfinished uploads at once.
func (s *Server) tusPreflight(up *upload.Handler) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r, done, ok := up.Preflight(c.Response(), c.Request())
			defer done()
			if !ok {
				return nil
			}
			c.SetRequest(r)
			err := next(c)
			if err != nil && syncproto.CodeOf(err) == syncproto.CodeUnauthorized {
				if tok := bearer(c.Request()); tok != "" {
					ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 30*time.Second)
					defer cancel()
					dev, derr := s.store.DeviceByToken(ctx, auth.HashToken(tok))
					if errors.Is(derr, domain.ErrRevoked) && dev.ID != "" {
						if perr := up.PurgeDevice(ctx, dev.ID); perr != nil {
							s.log.Warn("purging a revoked device's uploads", "device", dev.ID, "err", perr)
						}
					}
				}
			}
			return err
		}
	}
}

func (s *Server) tusOptions(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		up.Options(c.Response(), c.Request())
		return nil
	}
}

func (s *Server) tusCreate(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		up.Create(c.Response(), c.Request(), principal(c).DeviceID)
		return nil
	}
}

func (s *Server) tusHead(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		up.Head(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		return nil
	}
}

func (s *Server) tusPatch(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		up.Patch(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		return nil
	}
}

func (s *Server) tusOverride(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch strings.ToUpper(c.Request().Header.Get("X-HTTP-Method-Override")) {
		case http.MethodPatch:
			up.Patch(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		case http.MethodDelete:
			up.Delete(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		case http.MethodHead:
			up.Head(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		default:
			return echo.ErrMethodNotAllowed
		}
		return nil
	}
}

func (s *Server) tusDelete(up *upload.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		up.Delete(c.Response(), c.Request(), principal(c).DeviceID, c.Param("id"))
		return nil
	}
}

// --- missing ---

// MissingRequest asks which blobs the server lacks.
type MissingRequest struct {
	ProtocolVersion int      `json:"protocol_version"`
	SHA256          []string `json:"sha256"`
}

// MissingResponse lists the hashes of MissingRequest that are not present,
// in request order without duplicates.
type MissingResponse struct {
	ProtocolVersion int      `json:"protocol_version"`
	Missing         []string `json:"missing"`
}

func evCheckProtocol(v int) error { return syncproto.CheckVersion(v) }

// evCheckProtocolHeader checks the Fieldsync-Protocol header of a request
// without a body, if the client sent one.
func evCheckProtocolHeader(c echo.Context) error {
	h := c.Request().Header.Get("Fieldsync-Protocol")
	if h == "" {
		return nil
	}
	v, err := strconv.Atoi(h)
	if err != nil {
		return syncproto.Errorf(syncproto.CodeBadRequest, "Fieldsync-Protocol %q is not a number", h)
	}
	return evCheckProtocol(v)
}

func (s *Server) evidenceMissing(c echo.Context) error {
	var req MissingRequest
	dec := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		return syncproto.Errorf(syncproto.CodeInvalidJSON, "body: %v", err)
	}
	if err := evCheckProtocol(req.ProtocolVersion); err != nil {
		return err
	}
	if len(req.SHA256) > MaxMissingQuery {
		return syncproto.Errorf(syncproto.CodeTooLarge, "%d hashes in one request; at most %d", len(req.SHA256), MaxMissingQuery).With("max", MaxMissingQuery)
	}
	for i, sum := range req.SHA256 {
		if !syncproto.ValidSHA256(sum) {
			return syncproto.Errorf(syncproto.CodeValidation, "sha256[%d] %q is not 64 lowercase hex digits", i, evTrunc(sum))
		}
	}
	// A blob counts as present only if the device may see it: whether
	// other blobs exist is not told (see sqlstore/holders.go).
	missing, err := s.ev().store.MissingBlobsFor(c.Request().Context(), principal(c).DeviceID, req.SHA256)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, MissingResponse{ProtocolVersion: syncproto.ProtocolVersion, Missing: missing})
}

func evTrunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// --- serving ---

// visibleBlob returns the record of a present blob that a visit in the
// caller's scope references; anything else is not found.
func (s *Server) visibleBlob(c echo.Context) (store.BlobRecord, error) {
	sum := c.Param("sha256")
	notFound := syncproto.Errorf(syncproto.CodeNotFound, "blob %s not found", evTrunc(sum))
	if !blob.ValidSum(sum) {
		return store.BlobRecord{}, notFound
	}
	if err := evCheckProtocolHeader(c); err != nil {
		return store.BlobRecord{}, err
	}
	ctx := c.Request().Context()
	st := s.ev().store
	rec, err := st.Blob(ctx, sum)
	if errors.Is(err, domain.ErrNotFound) {
		return rec, notFound
	}
	if err != nil {
		return rec, err
	}
	vis, err := s.visible(c, principal(c).User)
	if err != nil {
		return rec, err
	}
	if vis == nil {
		return rec, nil
	}
	places, err := st.BlobPlaces(ctx, sum)
	if err != nil {
		return rec, err
	}
	for _, pl := range places {
		if vis[pl] {
			return rec, nil
		}
	}
	return rec, notFound
}

// openBlob opens a blob, giving up (503) if the store does not answer
// within the timeout; the returned reader stays usable for the request.
func (s *Server) openBlob(ctx context.Context, open func(context.Context) (io.ReadSeekCloser, error)) (io.ReadSeekCloser, context.CancelFunc, error) {
	octx, cancel := context.WithCancel(ctx)
	type result struct {
		r   io.ReadSeekCloser
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := open(octx)
		ch <- result{r, err}
	}()
	timeout := s.ev().cfg.BlobTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case res := <-ch:
		if res.err != nil {
			cancel()
			return nil, nil, res.err
		}
		return res.r, cancel, nil
	case <-t.C:
		cancel()
		go func() {
			if res := <-ch; res.r != nil {
				res.r.Close()
			}
		}()
		return nil, nil, fmt.Errorf("opening the blob took over %s: %w", timeout, blob.ErrUnavailable)
	}
}

// evBlobError maps blob-store errors: unavailable is 503 with Retry-After.
func evBlobError(err error) error {
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return syncproto.Errorf(syncproto.CodeNotFound, "blob not in the store")
	case errors.Is(err, blob.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return syncproto.Wrap(syncproto.CodeUnavailable, err)
	}
	return err
}

// evInlineTypes may be shown in the browser; anything else downloads as an
// attachment.
var evInlineTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true, "application/pdf": true}

func evBlobHeaders(h http.Header, contentType, etag string) {
	h.Set(echo.HeaderContentType, contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; sandbox")
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("ETag", etag)
}

func (s *Server) evidenceDownload(c echo.Context) error {
	rec, err := s.visibleBlob(c)
	if err != nil {
		return err
	}
	r, cancel, err := s.openBlob(c.Request().Context(), func(ctx context.Context) (io.ReadSeekCloser, error) {
		r, _, err := s.cfg.Blobs.Open(ctx, rec.SHA256)
		return r, err
	})
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			s.log.Error("a recorded blob is missing from the blob store", "sha256", rec.SHA256)
		}
		return evBlobError(err)
	}
	defer cancel()
	defer r.Close()
	mt, _, _ := strings.Cut(rec.MediaType, ";")
	evBlobHeaders(c.Response().Header(), rec.MediaType, `"`+rec.SHA256+`"`)
	if !evInlineTypes[strings.TrimSpace(mt)] {
		c.Response().Header().Set("Content-Disposition", `attachment; filename="`+rec.SHA256+`"`)
	}
	http.ServeContent(c.Response(), c.Request(), "", rec.StoredAt, r)
	return nil
}

func (s *Server) evidenceThumb(c echo.Context) error {
	rec, err := s.visibleBlob(c)
	if err != nil {
		return err
	}
	name := evidence.ThumbName(rec.SHA256, evidence.ThumbSize)
	etag := `"` + rec.SHA256 + `-thumb` + strconv.Itoa(evidence.ThumbSize) + `"`
	ctx := c.Request().Context()
	r, cancel, err := s.openBlob(ctx, func(ctx context.Context) (io.ReadSeekCloser, error) {
		r, _, err := s.cfg.Blobs.OpenDerived(ctx, name)
		return r, err
	})
	if err == nil {
		defer cancel()
		defer r.Close()
		evBlobHeaders(c.Response().Header(), "image/jpeg", etag)
		http.ServeContent(c.Response(), c.Request(), "", rec.StoredAt, r)
		return nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return evBlobError(err)
	}
	if !strings.HasPrefix(rec.MediaType, "image/") {
		return syncproto.Errorf(syncproto.CodeUnsupportedMedia, "no thumbnail for %s", rec.MediaType)
	}
	// Made once, then served from the blob store.
	src, cancel, err := s.openBlob(ctx, func(ctx context.Context) (io.ReadSeekCloser, error) {
		r, _, err := s.cfg.Blobs.Open(ctx, rec.SHA256)
		return r, err
	})
	if err != nil {
		return evBlobError(err)
	}
	data, err := evidence.Thumbnail(src, evidence.ThumbSize)
	src.Close()
	cancel()
	if errors.Is(err, evidence.ErrNotImage) {
		return syncproto.Errorf(syncproto.CodeUnsupportedMedia, "no thumbnail: %v", err)
	}
	if err != nil {
		return evBlobError(err)
	}
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	if err := s.cfg.Blobs.PutDerived(pctx, name, int64(len(data)), bytes.NewReader(data)); err != nil {
		s.log.Warn("caching a thumbnail", "sha256", rec.SHA256, "err", err)
	}
	pcancel()
	evBlobHeaders(c.Response().Header(), "image/jpeg", etag)
	http.ServeContent(c.Response(), c.Request(), "", rec.StoredAt, bytes.NewReader(data))
	return nil
}

func (s *Server) visitEvidence(c echo.Context) error {
	if err := evCheckProtocolHeader(c); err != nil {
		return err
	}
	id := c.Param("id")
	rep, err := s.ev().store.VisitEvidence(c.Request().Context(), id)
	if errors.Is(err, domain.ErrNotFound) {
		return syncproto.Errorf(syncproto.CodeNotFound, "visit %s not found", evTrunc(id))
	}
	if err != nil {
		return err
	}
	vis, err := s.visible(c, principal(c).User)
	if err != nil {
		return err
	}
	if vis != nil && !vis[rep.PlaceCode] {
		return syncproto.Errorf(syncproto.CodeNotFound, "visit %s not found", evTrunc(id))
	}
	return c.JSON(http.StatusOK, rep)
}

// --- completeness ---

// GapsResponse is the completeness list of a place.
type GapsResponse struct {
	// Place is the place asked for ("" for the caller's whole scope).
	Place string `json:"place"`
	// Visits lists the incomplete visits with what each lacks.
	Visits []evidence.VisitGap `json:"visits"`
	// Households summarises Visits by household.
	Households []HouseholdGap `json:"households"`
	// Truncated: there are more incomplete visits than limit.
	Truncated bool `json:"truncated"`
}

// HouseholdGap is a household with incomplete visits.
type HouseholdGap struct {
	HouseholdID string `json:"household_id"`
	PlaceCode   string `json:"place_code"`
	// Visits are the ids of its incomplete visits.
	Visits []string `json:"visits"`
	// Slots are the slot names missing in any of them.
	Slots []string `json:"slots"`
}

func (s *Server) evidenceGaps(c echo.Context) error {
	p := principal(c)
	vis, err := s.visible(c, p.User)
	if err != nil {
		return err
	}
	place := c.QueryParam("place")
	var roots []string
	switch {
	case place != "":
		if vis != nil && !vis[place] {
			return syncproto.Errorf(syncproto.CodeNotFound, "place %s not found", evTrunc(place))
		}
		if _, err := s.store.Place(c.Request().Context(), place); err != nil {
			return err
		}
		roots = []string{place}
	case vis != nil:
		roots = append([]string{}, p.User.PlaceCodes...)
	}
	limit := 1000
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return syncproto.Errorf(syncproto.CodeBadRequest, "limit must be 1..10000")
		}
		limit = n
	}
	gaps, truncated, err := s.ev().store.EvidenceGaps(c.Request().Context(), roots, limit)
	if err != nil {
		return err
	}
	resp := GapsResponse{Place: place, Visits: gaps, Households: []HouseholdGap{}, Truncated: truncated}
	idx := map[string]int{}
	for _, g := range gaps {
		i, ok := idx[g.HouseholdID]
		if !ok {
			i = len(resp.Households)
			idx[g.HouseholdID] = i
			resp.Households = append(resp.Households, HouseholdGap{HouseholdID: g.HouseholdID, PlaceCode: g.PlaceCode})
		}
		h := &resp.Households[i]
		h.Visits = append(h.Visits, g.VisitID)
		for _, m := range g.Missing {
			if !evContains(h.Slots, m.Slot) {
				h.Slots = append(h.Slots, m.Slot)
			}
		}
	}
	for i := range resp.Households {
		sort.Strings(resp.Households[i].Slots)
	}
	return c.JSON(http.StatusOK, resp)
}

func evContains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}
