package syncproto

import (
	"errors"
	"fmt"
	"sort"
)

// Code is a machine-readable error code carried in every error body and in
// rejected mutation results. Codes are stable across protocol versions; new
// codes may be added, so clients must treat unknown codes by their HTTP
// status class.
type Code string

// The error codes. Each maps to one HTTP status in the table below.
const (
	CodeBadRequest         Code = "bad_request"
	CodeInvalidJSON        Code = "invalid_json"
	CodeUnsupportedVersion Code = "unsupported_protocol_version"
	CodeUnauthorized       Code = "unauthorized"
	CodeForbidden          Code = "forbidden"
	CodeNotFound           Code = "not_found"
	CodeMethodNotAllowed   Code = "method_not_allowed"
	CodeConflict           Code = "conflict"
	CodeSequenceGap        Code = "sequence_gap"
	CodeSequenceReused     Code = "sequence_reused"
	CodeTooLarge           Code = "too_large"
	CodeUnsupportedMedia   Code = "unsupported_media_type"
	CodeInvalidGeometry    Code = "invalid_geometry"
	CodeValidation         Code = "validation_failed"
	CodeInvalidCursor      Code = "invalid_cursor"
	CodeOutOfScope         Code = "out_of_scope"
	CodeUnknownEntity      Code = "unknown_entity"
	CodeDuplicateID        Code = "duplicate_id"
	CodeStaleBase          Code = "stale_base_version"
	CodeChecksumMismatch   Code = "checksum_mismatch"
	CodeHashMismatch       Code = "hash_mismatch"
	CodeOffsetMismatch     Code = "offset_mismatch"
	CodeGone               Code = "gone"
	CodeRateLimited        Code = "rate_limited"
	CodeInternal           Code = "internal"
	CodeUnavailable        Code = "unavailable"
	// CodeStorageFull: the server's disk is full (507); what was
	// acknowledged is kept (details.offset for uploads), retry later.
	CodeStorageFull Code = "storage_full"
)

// codeStatus is the one table from error codes to HTTP statuses. It is kept
// as plain integers so that this package does not import net/http.
var codeStatus = map[Code]int{
	CodeBadRequest:         400,
	CodeInvalidJSON:        400,
	CodeInvalidCursor:      400,
	CodeUnsupportedVersion: 426,
	CodeUnauthorized:       401,
	CodeForbidden:          403,
	CodeOutOfScope:         403,
	CodeNotFound:           404,
	CodeUnknownEntity:      404,
	CodeMethodNotAllowed:   405,
	CodeConflict:           409,
	CodeSequenceGap:        409,
	CodeSequenceReused:     409,
	CodeDuplicateID:        409,
	CodeStaleBase:          409,
	CodeOffsetMismatch:     409,
	CodeGone:               410,
	CodeTooLarge:           413,
	CodeUnsupportedMedia:   415,
	CodeInvalidGeometry:    422,
	CodeValidation:         422,
	CodeChecksumMismatch:   460,
	CodeHashMismatch:       422,
	CodeRateLimited:        429,
	CodeInternal:           500,
	CodeUnavailable:        503,
	CodeStorageFull:        507,
}

// HTTPStatus returns the HTTP status for the code (500 for unknown codes).
func (c Code) HTTPStatus() int {
	if s, ok := codeStatus[c]; ok {
		return s
	}
	return 500
}

// Retryable reports whether a client should retry the same request later.
func (c Code) Retryable() bool {
	return c == CodeUnavailable || c == CodeRateLimited || c == CodeInternal || c == CodeStorageFull
}

// CodeForStatus maps an HTTP status back to the most general code, for
// clients that receive a body without a code (a proxy's error page, say).
func CodeForStatus(status int) Code {
	switch {
	case status == 401:
		return CodeUnauthorized
	case status == 403:
		return CodeForbidden
	case status == 404:
		return CodeNotFound
	case status == 405:
		return CodeMethodNotAllowed
	case status == 409:
		return CodeConflict
	case status == 413:
		return CodeTooLarge
	case status == 426:
		return CodeUnsupportedVersion
	case status == 429:
		return CodeRateLimited
	case status == 503 || status == 502 || status == 504:
		return CodeUnavailable
	case status == 507:
		return CodeStorageFull
	case status >= 500:
		return CodeInternal
	default:
		return CodeBadRequest
	}
}

// Error is the error body of every failed request: {"code": ..., "message": ...}.
// Details carries code-specific data, e.g. the expected sequence number for
// CodeSequenceGap or the supported range for CodeUnsupportedVersion.
type Error struct {
	Code    Code           `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
	Fields  []FieldError   `json:"fields,omitempty"`
	wrapped error
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap builds an *Error that keeps err for errors.Is/As.
func Wrap(code Code, err error) *Error {
	return &Error{Code: code, Message: err.Error(), wrapped: err}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the wrapped error, if any.
func (e *Error) Unwrap() error { return e.wrapped }

// With adds a detail and returns e.
func (e *Error) With(key string, value any) *Error {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = value
	return e
}

// CodeOf returns the code of err if it is or wraps an *Error, else
// CodeInternal (or "" for nil).
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var v ValidationErrors
	if errors.As(err, &v) {
		return CodeValidation
	}
	return CodeInternal
}

// Codes lists every error code, sorted.
func Codes() []Code {
	out := make([]Code, 0, len(codeStatus))
	for c := range codeStatus {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
