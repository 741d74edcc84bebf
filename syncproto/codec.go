package syncproto

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Limits on what one message may hold. A server answers bigger messages
// with CodeTooLarge before it reads them whole.
const (
	MaxMessageBytes  = 16 << 20 // decoded JSON of one request
	MaxPushMutations = 500
	DefaultPullBytes = 256 << 10
	MaxPullBytes     = 4 << 20
	MinPullBytes     = 4 << 10
)

// ErrTooLarge is returned by the decoders when a message exceeds
// MaxMessageBytes. It is wrapped in an *Error with CodeTooLarge.
var ErrTooLarge = errors.New("message too large")

// Encode writes v as JSON to w, gzip-compressed when gz is set.
func Encode(w io.Writer, v any, gz bool) error {
	if !gz {
		return json.NewEncoder(w).Encode(v)
	}
	zw := gzip.NewWriter(w)
	if err := json.NewEncoder(zw).Encode(v); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return zw.Close()
}

// decode reads one JSON value from r into v, refusing more than
// MaxMessageBytes. Unknown fields are ignored (rule 8).
func decode(r io.Reader, v any) error {
	lr := &io.LimitedReader{R: r, N: MaxMessageBytes + 1}
	data, err := io.ReadAll(lr)
	if err != nil {
		return Wrap(CodeBadRequest, fmt.Errorf("read body: %w", err))
	}
	if lr.N <= 0 {
		return Wrap(CodeTooLarge, fmt.Errorf("body over %d bytes: %w", MaxMessageBytes, ErrTooLarge))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Errorf(CodeInvalidJSON, "empty body")
	}
	if err := json.Unmarshal(data, v); err != nil {
		return Wrap(CodeInvalidJSON, fmt.Errorf("decode: %w", err))
	}
	return nil
}

// CheckVersion checks a request's protocol_version: missing (0) or outside
// MinProtocolVersion..MaxProtocolVersion gives CodeUnsupportedVersion with
// the supported range in its details.
func CheckVersion(v int) error {
	if v == 0 {
		return Errorf(CodeUnsupportedVersion, "protocol_version missing; this server speaks %d..%d", MinProtocolVersion, MaxProtocolVersion).
			With("min", MinProtocolVersion).With("max", MaxProtocolVersion)
	}
	if !SupportsVersion(v) {
		return Errorf(CodeUnsupportedVersion, "protocol_version %d not supported; this server speaks %d..%d", v, MinProtocolVersion, MaxProtocolVersion).
			With("min", MinProtocolVersion).With("max", MaxProtocolVersion)
	}
	return nil
}

// DecodePushRequest reads and checks a push request: version, device id,
// batch size and sequence continuity. A compact push (version 2) is
// expanded to the version 1 form: every seq and kind filled in, every
// evidence sha256 in hex. Problems with a single mutation's payload are
// not errors here; see Mutation.Check.
func DecodePushRequest(r io.Reader) (*PushRequest, error) {
	req, err := decodeAs[PushRequest](r)
	if err != nil {
		return nil, err
	}
	if err := CheckVersion(req.ProtocolVersion); err != nil {
		return nil, err
	}
	if req.DeviceID == "" {
		return nil, Errorf(CodeBadRequest, "device_id missing")
	}
	if len(req.Mutations) == 0 {
		return nil, Errorf(CodeBadRequest, "no mutations")
	}
	if len(req.Mutations) > MaxPushMutations {
		return nil, Errorf(CodeTooLarge, "%d mutations in one push; at most %d", len(req.Mutations), MaxPushMutations)
	}
	if req.ProtocolVersion >= 2 {
		for i := range req.Mutations {
			m := &req.Mutations[i]
			if m.Seq == 0 && i > 0 && req.Mutations[i-1].Seq > 0 {
				m.Seq = req.Mutations[i-1].Seq + 1
			}
			m.expand()
		}
	}
	for i, m := range req.Mutations {
		if m.Seq < 1 {
			return nil, Errorf(CodeBadRequest, "mutation %d: seq %d < 1", i, m.Seq)
		}
		if i > 0 && m.Seq != req.Mutations[i-1].Seq+1 {
			return nil, Errorf(CodeBadRequest, "mutation %d: seq %d does not follow %d", i, m.Seq, req.Mutations[i-1].Seq)
		}
	}
	return req, nil
}

// decodeAs reads one message of type T.
func decodeAs[T any](r io.Reader) (*T, error) {
	var v T
	if err := decode(r, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// DecodePushResponse reads a push response.
func DecodePushResponse(r io.Reader) (*PushResponse, error) { return decodeAs[PushResponse](r) }

// DecodePullRequest reads and checks a pull request.
func DecodePullRequest(r io.Reader) (*PullRequest, error) {
	req, err := decodeAs[PullRequest](r)
	if err != nil {
		return nil, err
	}
	if err := CheckVersion(req.ProtocolVersion); err != nil {
		return nil, err
	}
	if req.DeviceID == "" {
		return nil, Errorf(CodeBadRequest, "device_id missing")
	}
	if len(req.Cursor) > MaxCursorLen {
		return nil, Errorf(CodeInvalidCursor, "cursor too long")
	}
	switch {
	case req.MaxBytes == 0:
		req.MaxBytes = DefaultPullBytes
	case req.MaxBytes < MinPullBytes:
		req.MaxBytes = MinPullBytes
	case req.MaxBytes > MaxPullBytes:
		req.MaxBytes = MaxPullBytes
	}
	return req, nil
}

// DecodePullResponse reads a pull response.
func DecodePullResponse(r io.Reader) (*PullResponse, error) { return decodeAs[PullResponse](r) }

// DecodeError reads an error body.
func DecodeError(r io.Reader) (*Error, error) {
	var e Error
	if err := decode(r, &e); err != nil {
		return nil, err
	}
	if e.Code == "" {
		return nil, Errorf(CodeInvalidJSON, "error body without code")
	}
	return &e, nil
}

// kindRule is what a mutation kind carries and how it is checked.
type kindRule struct {
	payload string                 // the JSON field that carries it
	present func(*Mutation) bool   // the payload is set
	check   func(*Mutation) *Error // the payload is sound (it is present)
}

// mutationKinds is every mutation kind with its payload and its check.
// A new kind is one entry here (and its payload's check below).
var mutationKinds = map[MutationKind]kindRule{
	KindVisitCreate: {"visit",
		func(m *Mutation) bool { return m.Visit != nil }, func(m *Mutation) *Error { return m.Visit.check() }},
	KindHouseholdCreate: {"household",
		func(m *Mutation) bool { return m.Household != nil }, func(m *Mutation) *Error { return checkNewHousehold(m.Household) }},
	KindHouseholdUpdate: {"household_update",
		func(m *Mutation) bool { return m.HouseholdUpdate != nil }, func(m *Mutation) *Error { return m.HouseholdUpdate.check() }},
	KindHouseholdMove: {"household_move",
		func(m *Mutation) bool { return m.HouseholdMove != nil }, func(m *Mutation) *Error { return m.HouseholdMove.check() }},
	KindHouseholdDelete: {"household_delete",
		func(m *Mutation) bool { return m.HouseholdDelete != nil }, func(m *Mutation) *Error { return m.HouseholdDelete.check() }},
	KindEvidenceAttach: {"evidence_attach",
		func(m *Mutation) bool { return m.EvidenceAttach != nil }, func(m *Mutation) *Error { return m.EvidenceAttach.check() }},
}

// Check validates a mutation's payload on its own, without the server's
// state: the payload matches the kind, ids are valid, points are in range.
// A failing mutation is rejected (and still advances the sequence).
func (m *Mutation) Check() *Error {
	set := 0
	for _, r := range mutationKinds {
		if r.present(m) {
			set++
		}
	}
	if set != 1 {
		return Errorf(CodeBadRequest, "mutation %d: want exactly one payload, got %d", m.Seq, set)
	}
	r, ok := mutationKinds[m.Kind]
	if !ok {
		return Errorf(CodeBadRequest, "unknown mutation kind %q", m.Kind)
	}
	if !r.present(m) {
		return Errorf(CodeBadRequest, "%s without %s", m.Kind, r.payload)
	}
	return r.check(m)
}

func badID(what, id string) *Error {
	return Errorf(CodeBadRequest, "%s %q is not a ULID or UUID", what, id)
}

func (v *Visit) check() *Error {
	if !ValidID(v.ID) {
		return badID("visit id", v.ID)
	}
	if !ValidID(v.HouseholdID) {
		return badID("household id", v.HouseholdID)
	}
	if v.CorrectsVisitID != "" && !ValidID(v.CorrectsVisitID) {
		return badID("corrects_visit_id", v.CorrectsVisitID)
	}
	if v.FormID == "" || v.FormVersion < 1 {
		return Errorf(CodeBadRequest, "visit %s: form_id and form_version required", v.ID)
	}
	if v.Point != nil && !v.Point.Valid() {
		return Errorf(CodeValidation, "visit %s: %s", v.ID, v.Point.Problem())
	}
	if !finite(v.AccuracyM) || v.AccuracyM < 0 {
		return Errorf(CodeValidation, "visit %s: accuracy_m %s must be finite and >= 0", v.ID, strconv.FormatFloat(v.AccuracyM, 'g', -1, 64))
	}
	if v.DeviceTime.IsZero() {
		return Errorf(CodeValidation, "visit %s: device_time required", v.ID)
	}
	if code := CheckGPSReason(v.GPSReason); code != "" {
		return Errorf(CodeValidation, "visit %s: gps_reason has %d characters, at most %d", v.ID, utf8.RuneCountInString(v.GPSReason), MaxGPSReasonRunes)
	}
	for _, e := range v.Evidence {
		if err := e.Check(); err != nil {
			return err
		}
	}
	return nil
}

func checkNewHousehold(h *Household) *Error {
	if !ValidID(h.ID) {
		return badID("household id", h.ID)
	}
	if h.PlaceCode == "" {
		return Errorf(CodeValidation, "household %s: place_code required", h.ID)
	}
	return CheckHouseholdFields(h.Fields)
}

func (u *HouseholdUpdate) check() *Error {
	if !ValidID(u.HouseholdID) {
		return badID("household id", u.HouseholdID)
	}
	if len(u.Fields) == 0 {
		return Errorf(CodeValidation, "household %s: update without fields", u.HouseholdID)
	}
	return CheckHouseholdFields(u.Fields)
}

func (mv *HouseholdMove) check() *Error {
	if !ValidID(mv.HouseholdID) {
		return badID("household id", mv.HouseholdID)
	}
	if mv.PlaceCode == "" {
		return Errorf(CodeValidation, "household %s: move without place_code", mv.HouseholdID)
	}
	return nil
}

func (d *HouseholdDelete) check() *Error {
	if !ValidID(d.HouseholdID) {
		return badID("household id", d.HouseholdID)
	}
	return nil
}

func (a *EvidenceAttach) check() *Error {
	if !ValidID(a.VisitID) {
		return badID("visit id", a.VisitID)
	}
	return a.Evidence.Check()
}

// MaxEvidenceBytes is the largest single evidence blob a device may declare.
const MaxEvidenceBytes = 64 << 20

// Check validates an evidence reference.
func (e EvidenceRef) Check() *Error {
	if !ValidSHA256(e.SHA256) {
		return Errorf(CodeValidation, "evidence sha256 %q is not 64 lowercase hex digits", e.SHA256)
	}
	if e.Size <= 0 || e.Size > MaxEvidenceBytes {
		return Errorf(CodeValidation, "evidence %s: size %d outside 1..%d", e.SHA256, e.Size, MaxEvidenceBytes)
	}
	if e.Slot == "" || len(e.Slot) > 64 {
		return Errorf(CodeValidation, "evidence %s: slot required", e.SHA256)
	}
	if e.MediaType == "" || len(e.MediaType) > 100 {
		return Errorf(CodeValidation, "evidence %s: media_type required", e.SHA256)
	}
	return nil
}

// MaxGPSReasonRunes bounds a visit's gps_reason, in code points.
const MaxGPSReasonRunes = 200

// CheckGPSReason checks a visit's gps_reason: "" (none) or at most
// MaxGPSReasonRunes code points. It returns "" when valid, else
// FieldCodeTooLong. The field app's checkGPSReason (formcheck.js) gives
// the same verdicts (shared vectors in testdata/vectors/gps_reason.json).
func CheckGPSReason(s string) FieldCode {
	if utf8.RuneCountInString(s) > MaxGPSReasonRunes {
		return FieldCodeTooLong
	}
	return ""
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// WritePullResponse writes r as JSON to w, the same object Encode would
// write. When r.EncodedOps matches r.Ops, the ops' bytes are copied from
// it rather than encoded again: a page of a first sync holds megabytes of
// ops, and encoding them twice cost as much as reading them.
func WritePullResponse(w io.Writer, r *PullResponse) error {
	if len(r.EncodedOps) != len(r.Ops) {
		return json.NewEncoder(w).Encode(r)
	}
	// The fields other than ops, as one object whose opening brace the
	// ops array replaces.
	rest, err := json.Marshal(struct {
		ProtocolVersion int    `json:"protocol_version"`
		Cursor          string `json:"cursor"`
		HasMore         bool   `json:"has_more"`
		ServerHLC       HLC    `json:"server_hlc"`
		LastSeq         *int64 `json:"last_seq,omitempty"`
	}{r.ProtocolVersion, r.Cursor, r.HasMore, r.ServerHLC, r.LastSeq})
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if _, err := io.WriteString(w, `{"ops":[`); err != nil {
		return err
	}
	for i, op := range r.EncodedOps {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		if _, err := w.Write(op); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(w, "],"); err != nil {
		return err
	}
	if _, err := w.Write(rest[1:]); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}
