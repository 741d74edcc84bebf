package syncproto

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// HLC is a hybrid logical clock timestamp: wall-clock milliseconds plus a
// logical counter that orders events within the same millisecond and keeps
// causality when clocks disagree. On the wire it is the string
// "<13-digit unix ms>-<4 lowercase hex digits>", e.g. "1764345600000-0002",
// which sorts lexicographically in the same order as the clock.
type HLC struct {
	WallMs  int64
	Counter uint16
}

// IsZero reports whether h is the zero timestamp.
func (h HLC) IsZero() bool { return h.WallMs == 0 && h.Counter == 0 }

// Compare returns -1, 0 or +1 as h is before, equal to or after o.
func (h HLC) Compare(o HLC) int {
	switch {
	case h.WallMs < o.WallMs:
		return -1
	case h.WallMs > o.WallMs:
		return 1
	case h.Counter < o.Counter:
		return -1
	case h.Counter > o.Counter:
		return 1
	}
	return 0
}

// Time returns the wall-clock part as a time.Time.
func (h HLC) Time() time.Time { return time.UnixMilli(h.WallMs).UTC() }

func (h HLC) String() string { return fmt.Sprintf("%013d-%04x", h.WallMs, h.Counter) }

// MarshalText implements encoding.TextMarshaler.
func (h HLC) MarshalText() ([]byte, error) {
	if h.IsZero() {
		return []byte{}, nil
	}
	return []byte(h.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. The empty string is the
// zero HLC.
func (h *HLC) UnmarshalText(b []byte) error {
	v, err := ParseHLC(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// ParseHLC parses the wire form of an HLC.
func ParseHLC(s string) (HLC, error) {
	if s == "" {
		return HLC{}, nil
	}
	if len(s) != 18 || s[13] != '-' {
		return HLC{}, Errorf(CodeBadRequest, "hlc %q: want <13 digits>-<4 hex>", s)
	}
	for i := 0; i < 13; i++ {
		if s[i] < '0' || s[i] > '9' {
			return HLC{}, Errorf(CodeBadRequest, "hlc %q: wall time must be 13 digits", s)
		}
	}
	for i := 14; i < 18; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return HLC{}, Errorf(CodeBadRequest, "hlc %q: counter must be 4 hex digits", s)
		}
	}
	ms, err := strconv.ParseInt(s[:13], 10, 64)
	if err != nil || ms < 0 {
		return HLC{}, Errorf(CodeBadRequest, "hlc %q: bad wall time", s)
	}
	c, err := strconv.ParseUint(s[14:], 16, 16)
	if err != nil {
		return HLC{}, Errorf(CodeBadRequest, "hlc %q: bad counter", s)
	}
	return HLC{WallMs: ms, Counter: uint16(c)}, nil
}

// Clock issues monotonically increasing HLCs. The zero value uses time.Now;
// it is safe for concurrent use.
type Clock struct {
	// Now, if set, replaces time.Now (tests, simulated skew).
	Now func() time.Time

	mu   sync.Mutex
	last HLC
}

func (c *Clock) wall() int64 {
	if c.Now != nil {
		return c.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// Tick returns a new timestamp for a local event.
func (c *Clock) Tick() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.wall()
	if w > c.last.WallMs {
		c.last = HLC{WallMs: w}
	} else {
		c.last = next(c.last)
	}
	return c.last
}

// Observe merges a timestamp received from a peer and returns a new local
// timestamp that is after both.
func (c *Clock) Observe(remote HLC) HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.wall()
	switch {
	case w > c.last.WallMs && w > remote.WallMs:
		c.last = HLC{WallMs: w}
	case remote.Compare(c.last) > 0:
		c.last = next(remote)
	default:
		c.last = next(c.last)
	}
	return c.last
}

func next(h HLC) HLC {
	if h.Counter == 0xffff {
		return HLC{WallMs: h.WallMs + 1}
	}
	return HLC{WallMs: h.WallMs, Counter: h.Counter + 1}
}

// ClampHLC limits a device timestamp that runs ahead of the server's clock
// by more than maxAhead. It returns the timestamp to use and whether it was
// clamped. A device clock far behind is kept as it is: it loses ties it
// deserves to lose, and the push is never rejected for it.
func ClampHLC(h HLC, serverNow time.Time, maxAhead time.Duration) (HLC, bool) {
	limit := serverNow.Add(maxAhead).UnixMilli()
	if h.WallMs > limit {
		return HLC{WallMs: limit}, true
	}
	return h, false
}
