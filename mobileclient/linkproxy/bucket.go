package linkproxy

import (
	"sync"
	"time"
)

// bucket is a token bucket that may go into debt: a caller takes the
// tokens for what it is about to send and waits until the debt is paid, so
// a chunk of any size costs exactly its serialization time at the rate.
// The burst (what an idle link may send at once) is a tenth of a second of
// traffic, at most 16 KiB.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func (b *bucket) set(rate int64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rate = float64(rate)
	b.burst = max(1, min(b.rate/10, 16<<10))
	b.tokens = b.burst
	b.last = now
}

// reserve takes n tokens at now and returns how long to wait before the n
// bytes may go.
func (b *bucket) reserve(n int, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
