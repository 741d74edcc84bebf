package upload

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on Upload-Metadata.
const (
	// MaxMetadataHeader is the longest accepted Upload-Metadata header.
	MaxMetadataHeader = 4096
	// MaxMetadataPairs is the most key-value pairs accepted.
	MaxMetadataPairs = 16
	// MaxMetadataValue is the longest accepted decoded value, in bytes.
	MaxMetadataValue = 512
	// MaxMetadataKey is the longest accepted key.
	MaxMetadataKey = 64
)

// Metadata keys the server reads.
const (
	// MetaSHA256 is the lowercase hex SHA-256 of the whole file (required).
	MetaSHA256 = "sha256"
	// MetaFiletype is the file's media type (optional).
	MetaFiletype = "filetype"
	// MetaFilename is the file's name (optional, opaque: never used as a
	// path).
	MetaFilename = "filename"
)

// ErrMetadata is wrapped by every ParseMetadata error.
var ErrMetadata = errors.New("bad Upload-Metadata")

var (
	metaKeyRE   = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)
)

// mediaTypeKeys hold a media type ("image/jpeg"), the one kind of value
// allowed to contain a "/".
var mediaTypeKeys = map[string]bool{MetaFiletype: true, "type": true}

// ParseMetadata decodes a tus Upload-Metadata header: comma-separated
// pairs of a key and an optional space-separated base64 value. It refuses
// (with an error wrapping ErrMetadata) headers over MaxMetadataHeader
// bytes, more than MaxMetadataPairs pairs, duplicate or malformed keys,
// values that are not base64, over MaxMetadataValue bytes, not UTF-8 or
// holding control characters, and a media type key (filetype, type) that
// is not a plain type/subtype. Other values are opaque: the server never
// builds a path from them, so a "/" or "\" (tus-js-client and Uppy send
// relativePath "DCIM/100CAMERA/IMG_0001.JPG") is kept as it is.
func ParseMetadata(h string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(h) == "" {
		return out, nil
	}
	if len(h) > MaxMetadataHeader {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMetadata, len(h), MaxMetadataHeader)
	}
	pairs := strings.Split(h, ",")
	if len(pairs) > MaxMetadataPairs {
		return nil, fmt.Errorf("%w: %d pairs, at most %d", ErrMetadata, len(pairs), MaxMetadataPairs)
	}
	for _, p := range pairs {
		p = strings.TrimSpace(p)
		key, enc, hasValue := strings.Cut(p, " ")
		if key == "" || len(key) > MaxMetadataKey || !metaKeyRE.MatchString(key) {
			return nil, fmt.Errorf("%w: bad key %q", ErrMetadata, trunc(key))
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%w: key %q twice", ErrMetadata, key)
		}
		var val string
		if hasValue {
			enc = strings.TrimSpace(enc)
			if len(enc) > base64.StdEncoding.EncodedLen(MaxMetadataValue) {
				return nil, fmt.Errorf("%w: value of %q longer than %d bytes", ErrMetadata, key, MaxMetadataValue)
			}
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				b, err = base64.RawStdEncoding.DecodeString(enc)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: value of %q is not base64", ErrMetadata, key)
			}
			if len(b) > MaxMetadataValue {
				return nil, fmt.Errorf("%w: value of %q longer than %d bytes", ErrMetadata, key, MaxMetadataValue)
			}
			val = string(b)
		}
		if err := checkValue(key, val); err != nil {
			return nil, err
		}
		out[key] = val
	}
	return out, nil
}

func checkValue(key, val string) error {
	if !utf8.ValidString(val) {
		return fmt.Errorf("%w: value of %q is not UTF-8", ErrMetadata, key)
	}
	for _, r := range val {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: value of %q holds control characters", ErrMetadata, key)
		}
	}
	if mediaTypeKeys[key] {
		if val != "" && !mediaTypeRE.MatchString(val) {
			return fmt.Errorf("%w: %s %q is not a media type", ErrMetadata, key, trunc(val))
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// EncodeMetadata encodes metadata as an Upload-Metadata header, keys
// sorted.
func EncodeMetadata(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if m[k] == "" {
			parts = append(parts, k)
			continue
		}
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(m[k])))
	}
	return strings.Join(parts, ",")
}

// ErrChecksum is wrapped by ParseChecksum errors.
var ErrChecksum = errors.New("bad Upload-Checksum")

// ChecksumAlgorithm is the one checksum algorithm the server supports.
const ChecksumAlgorithm = "sha256"

// ParseChecksum decodes an Upload-Checksum header ("sha256 <base64>") and
// returns the 32-byte digest. Other algorithms and malformed values are
// errors wrapping ErrChecksum.
func ParseChecksum(h string) ([]byte, error) {
	algo, enc, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok {
		return nil, fmt.Errorf("%w: want %q", ErrChecksum, "sha256 <base64 digest>")
	}
	if !strings.EqualFold(algo, ChecksumAlgorithm) {
		return nil, fmt.Errorf("%w: algorithm %q not supported (Tus-Checksum-Algorithm: %s)", ErrChecksum, trunc(algo), ChecksumAlgorithm)
	}
	sum, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil || len(sum) != 32 {
		return nil, fmt.Errorf("%w: not a base64 sha256 digest", ErrChecksum)
	}
	return sum, nil
}

// parseOffset reads a non-negative decimal header value (Upload-Offset,
// Upload-Length).
func parseOffset(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}
