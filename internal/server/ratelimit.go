package server

import (
	"math"
	"sync"
	"time"
)

// rateLimiter is a token bucket: rate requests per second on average,
// bursts of up to burst.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// newRateLimiter returns nil (no limit) when rate is not positive.
func newRateLimiter(rate float64, burst int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	b := float64(max(burst, 1))
	return &rateLimiter{rate: rate, burst: b, tokens: b}
}

// allow takes one token at now, or says how long until one is available.
func (l *rateLimiter) allow(now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		if dt := now.Sub(l.last).Seconds(); dt > 0 {
			l.tokens = math.Min(l.burst, l.tokens+dt*l.rate)
		}
	}
	if now.After(l.last) {
		l.last = now
	}
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	wait := (1 - l.tokens) / l.rate
	return false, time.Duration(wait * float64(time.Second))
}
