package syncproto

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ValidID reports whether s is an id a device may create: a ULID (26
// Crockford base-32 characters, upper or lower case) or a UUID in its
// canonical 36-character form (any version; devices should use v7).
func ValidID(s string) bool {
	switch len(s) {
	case 26:
		if s[0] > '7' {
			return false
		}
		for i := 0; i < len(s); i++ {
			if !strings.ContainsRune(crockford, toUpper(s[i])) {
				return false
			}
		}
		return true
	case 36:
		for i := 0; i < len(s); i++ {
			c := s[i]
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if c != '-' {
					return false
				}
				continue
			}
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
		return true
	}
	return false
}

func toUpper(c byte) rune {
	if c >= 'a' && c <= 'z' {
		return rune(c - 32)
	}
	return rune(c)
}

// NewID returns a new ULID for time t: 48 bits of milliseconds and 80 random
// bits, so ids sort by creation time.
func NewID(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	// 128 bits -> 26 base-32 characters, most significant first.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
