package server

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// ErrBudget is returned when the KV-cache budget cannot take a request.
var ErrBudget = errors.New("KV-cache budget exhausted")

// kvBudget accounts KV-cache memory in positions. A stream is charged the
// largest capacity its cache can have grown to for the positions it holds
// (capBound), so that the sum of charges bounds the memory the caches
// really hold.
//
// A charge that does not fit waits, up to wait, for other streams to
// release memory, in a queue served strictly in order: without it, a
// refused client retrying after Retry-After competes with every client
// that opens its next conversation the moment its last one ends, and can
// lose for minutes. A stream that already holds a charge and needs more is
// queued ahead of its own tenant's new streams queued last (never ahead of
// another tenant's charge that came before it): it holds memory that only
// its progress gives back. A charge that could not fit even if every other
// tenant released all it holds (its own tenant's streams are in the way)
// holds back only its own tenant's: asked for again and again (an append
// too long for the room left, refused and sent again), it kept every other
// tenant's streams out of a budget with room for them. Growth went ahead
// of other tenants' earlier charges once, and one tenant's appends, asked
// again and again, kept another tenant's waiting stream behind them.
type kvBudget struct {
	mu          sync.Mutex
	limit, used int64            // positions; limit 0 means unlimited
	held        map[string]int64 // positions charged per tenant (none: 0)
	bytesPerPos int64
	maxLen      int
	wait        time.Duration // the longest a charge waits (0: refused at once)
	queue       []*budgetWaiter
	waited      budgetWaits
}

// budgetWaiter is a charge waiting in kvBudget's queue.
type budgetWaiter struct {
	owner   string // the tenant charged
	n       int64
	growth  bool          // the stream already holds a charge
	ready   chan struct{} // closed once granted
	granted bool
}

// budgetWaits counts the charges that had to wait: granted and refused
// (the wait ended, or the request went away), and the seconds they
// waited in all.
type budgetWaits struct {
	granted, refused uint64
	seconds          float64
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

func newKVBudget(limitBytes, bytesPerPos int64, maxLen int, wait time.Duration) *kvBudget {
	b := &kvBudget{bytesPerPos: bytesPerPos, maxLen: maxLen, wait: max(0, wait), held: map[string]int64{}}
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

// longestStream is the most positions one stream may hold for its charge
// (capBound) to fit the whole budget, at most maxLen; maxLen when the
// budget is unlimited.
func (b *kvBudget) longestStream(maxLen int) int {
	if b.limit == 0 {
		return maxLen
	}
	lo, hi := 0, maxLen // capBound(lo) fits; find the largest such lo
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if b.capBound(mid) <= b.limit {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// acquire charges n positions to owner's stream, waiting in the queue
// while they do not fit or a charge ahead holds them back (grantLocked;
// growth: for a stream that already holds a charge). It fails with ErrBudget when
// n exceeds the whole budget, when the wait ends, or when ctx ends first.
func (b *kvBudget) acquire(ctx context.Context, owner string, n int64, growth bool) error {
	if n <= 0 {
		return nil
	}
	b.mu.Lock()
	// at is where the charge would queue: at the end, a growth charge
	// ahead of the new streams of its own tenant queued last (never ahead
	// of another tenant's charge that came before it).
	at := len(b.queue)
	for growth && at > 0 && b.queue[at-1].owner == owner && !b.queue[at-1].growth {
		at--
	}
	if b.limit == 0 || (len(b.queue) == 0 && b.used+n <= b.limit) {
		b.chargeLocked(owner, n)
		b.mu.Unlock()
		return nil
	}
	if n > b.limit {
		b.mu.Unlock()
		return ErrBudget
	}
	// Queued, then granted at once if the charges ahead do not hold it
	// back.
	w := &budgetWaiter{owner: owner, n: n, growth: growth, ready: make(chan struct{})}
	b.queue = slices.Insert(b.queue, at, w)
	b.grantLocked()
	if w.granted {
		b.mu.Unlock()
		return nil
	}
	if b.wait <= 0 {
		b.removeLocked(w)
		b.mu.Unlock()
		return ErrBudget
	}
	b.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(b.wait)
	defer timer.Stop()
	select {
	case <-w.ready:
	case <-timer.C:
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waited.seconds += time.Since(start).Seconds()
	if w.granted {
		b.waited.granted++
		return nil
	}
	b.waited.refused++
	b.removeLocked(w)
	return ErrBudget
}

// removeLocked takes w, not granted, out of the queue: the charges it held
// back may fit.
func (b *kvBudget) removeLocked(w *budgetWaiter) {
	if i := slices.Index(b.queue, w); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
	}
	b.grantLocked()
}

// chargeLocked adds n positions charged to owner.
func (b *kvBudget) chargeLocked(owner string, n int64) {
	b.used += n
	b.held[owner] += n
}

// grantLocked grants queued charges in order while they fit. A charge
// that does not fit holds back every later one, unless it could not fit
// even with every other tenant's charges released: then it holds back its
// own tenant's alone.
func (b *kvBudget) grantLocked() {
	var stuck []string // tenants with a charge that does not fit
	all := false       // a charge that does not fit holds back every later one
	kept := b.queue[:0]
	for _, w := range b.queue {
		switch {
		case all || slices.Contains(stuck, w.owner):
			kept = append(kept, w)
		case b.used+w.n > b.limit:
			kept = append(kept, w)
			stuck = append(stuck, w.owner)
			all = b.held[w.owner]+w.n <= b.limit
		default:
			b.chargeLocked(w.owner, w.n)
			w.granted = true
			close(w.ready)
		}
	}
	clear(b.queue[len(kept):])
	b.queue = kept
}

// forceAcquire charges n positions to owner even beyond the limit: for
// tokens that are already in a cache (an estimate fell short), which must
// be counted.
func (b *kvBudget) forceAcquire(owner string, n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.chargeLocked(owner, n)
	b.mu.Unlock()
}

// release returns n positions charged to owner.
func (b *kvBudget) release(owner string, n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.held[owner] -= n; b.held[owner] <= 0 {
		delete(b.held, owner)
	}
	b.grantLocked()
	b.mu.Unlock()
}

// waits returns the counts of charges that waited, and the number
// waiting now.
func (b *kvBudget) waits() (budgetWaits, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waited, len(b.queue)
}

// usage returns the charged and total positions.
func (b *kvBudget) usage() (used, limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.limit
}
