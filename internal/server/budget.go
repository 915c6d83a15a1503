package server

import (
	"errors"
	"sync"
)

// ErrBudget is returned when the KV-cache budget cannot take a request.
var ErrBudget = errors.New("KV-cache budget exhausted")

// kvBudget accounts KV-cache memory in positions. A stream is charged the
// largest capacity its cache can have grown to for the positions it holds
// (capBound), so that the sum of charges bounds the memory the caches
// really hold.
type kvBudget struct {
	mu          sync.Mutex
	limit, used int64 // positions; limit 0 means unlimited
	bytesPerPos int64
	maxLen      int
}

// budgetFor is the KV budget to enforce when asked bytes were asked for (0:
// no limit) on a device whose cache holds capacity bytes (0: grows as
// needed, the CPU). A device with a fixed pool (a GPU) caps the budget, so
// that a full pool is a 429 before any forward, never an error inside one;
// the budget charges each stream more than the pool's rounding of it to
// blocks costs.
func budgetFor(asked, capacity int64) int64 {
	if capacity > 0 && (asked <= 0 || asked > capacity) {
		return capacity
	}
	return asked
}

func newKVBudget(limitBytes, bytesPerPos int64, maxLen int) *kvBudget {
	b := &kvBudget{bytesPerPos: bytesPerPos, maxLen: maxLen}
	if limitBytes > 0 && bytesPerPos > 0 {
		b.limit = max(1, limitBytes/bytesPerPos)
	}
	return b
}

// Cache growth constants of internal/qwen3's Cache.Reserve: a cache grows
// to max(n, cap+max(128, cap/4)) positions rounded up to 64. Since growth
// happens only when n > cap, the capacity for n positions never exceeds
// n + max(128, n/4) rounded up to 64. A test checks the bound against real
// caches.
const (
	cacheMinGrowth = 128
	cacheBlock     = 64
)

// capBound is the most positions a cache holding n positions can have
// allocated.
func (b *kvBudget) capBound(n int) int64 {
	if n <= 0 {
		return 0
	}
	c := n + max(cacheMinGrowth, n/4)
	c = (c + cacheBlock - 1) / cacheBlock * cacheBlock
	return int64(min(c, max(b.maxLen, n)))
}

// tryAcquire charges n positions if they fit.
func (b *kvBudget) tryAcquire(n int64) bool {
	if n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// forceAcquire charges n positions even beyond the limit: for tokens that
// are already in a cache (an estimate fell short), which must be counted.
func (b *kvBudget) forceAcquire(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

func (b *kvBudget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// usage returns the charged and total positions.
func (b *kvBudget) usage() (used, limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.limit
}
