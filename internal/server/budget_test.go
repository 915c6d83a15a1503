package server

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBudgetFor: a device with a fixed KV pool (a GPU) caps the budget;
// where caches grow as needed (the CPU) the asked budget stands.
func TestBudgetFor(t *testing.T) {
	for _, c := range []struct{ asked, capacity, want int64 }{
		{0, 0, 0}, // CPU, no limit asked
		{1 << 30, 0, 1 << 30},
		{0, 8 << 30, 8 << 30}, // GPU, no limit asked: the pool
		{1 << 30, 8 << 30, 1 << 30},
		{16 << 30, 8 << 30, 8 << 30},
	} {
		if got := budgetFor(c.asked, c.capacity); got != c.want {
			t.Errorf("budgetFor(%d, %d) = %d, want %d", c.asked, c.capacity, got, c.want)
		}
	}
}

// startAcquire runs acquire in a goroutine for tenant "t" and returns a
// channel with its result.
func startAcquire(ctx context.Context, b *kvBudget, n int64, growth bool) <-chan error {
	return startAcquireFor(ctx, b, "t", n, growth)
}

// startAcquireFor is startAcquire for owner's stream.
func startAcquireFor(ctx context.Context, b *kvBudget, owner string, n int64, growth bool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.acquire(ctx, owner, n, growth) }()
	return done
}

// waitQueued waits until n charges are queued.
func waitQueued(t *testing.T, b *kvBudget, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, q := b.waits(); q == n {
			return
		}
		if time.Now().After(deadline) {
			_, q := b.waits()
			t.Fatalf("%d charges queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func pending(t *testing.T, done <-chan error, name string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: returned %v while it should wait", name, err)
	case <-time.After(20 * time.Millisecond):
	}
}

func granted(t *testing.T, done <-chan error, name string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v, want granted", name, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not granted", name)
	}
}

// TestBudgetQueueOrder: charges that do not fit wait and are granted in
// arrival order; a later, smaller charge that would fit does not overtake
// the first waiter; a stream's growth is queued ahead of new streams.
func TestBudgetQueueOrder(t *testing.T) {
	ctx := context.Background()
	b := newKVBudget(100, 1, 1000, time.Minute)
	if err := b.acquire(ctx, "t", 60, false); err != nil {
		t.Fatal(err)
	}
	first := startAcquire(ctx, b, 50, false)
	waitQueued(t, b, 1)
	second := startAcquire(ctx, b, 30, false) // would fit (60+30 ≤ 100), but is second
	waitQueued(t, b, 2)
	pending(t, second, "second")
	// Growth of an open stream goes ahead of both, and fits: granted now.
	granted(t, startAcquire(ctx, b, 10, true), "growth")
	if used, _ := b.usage(); used != 70 {
		t.Fatalf("used %d, want 70", used)
	}
	// Growth that does not fit waits at the head.
	growth := startAcquire(ctx, b, 40, true)
	waitQueued(t, b, 3)
	b.release("t", 20) // 50 used: the growth (40) fits, then neither new one
	granted(t, growth, "growth 2")
	pending(t, first, "first")
	b.release("t", 60) // 30 used: first (50) fits, second (30) not after it
	granted(t, first, "first")
	pending(t, second, "second")
	b.release("t", 20) // 60 used
	granted(t, second, "second")
	if used, _ := b.usage(); used != 90 {
		t.Fatalf("used %d, want 90", used)
	}
	w, q := b.waits()
	if w.granted != 3 || w.refused != 0 || q != 0 {
		t.Fatalf("waits %+v, %d queued; want 3 granted, none refused or queued", w, q)
	}
}

// TestBudgetWaitEnds: a charge is refused when its wait ends or its
// request goes away, leaving nothing charged and letting the charges
// behind it through; a charge larger than the whole budget, or any charge
// without a wait, is refused at once.
func TestBudgetWaitEnds(t *testing.T) {
	b := newKVBudget(100, 1, 1000, 50*time.Millisecond)
	ctx := context.Background()
	if err := b.acquire(ctx, "t", 70, false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.acquire(ctx, "t", 40, false); !errors.Is(err, ErrBudget) {
		t.Fatalf("after the wait: %v, want ErrBudget", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("refused after %v, before the wait ended", el)
	}

	long := newKVBudget(100, 1, 1000, time.Hour)
	if err := long.acquire(ctx, "t", 70, false); err != nil {
		t.Fatal(err)
	}
	// More than the whole budget can never fit: refused without queueing
	// (queued, it would wait the hour).
	if err := long.acquire(ctx, "t", 101, false); !errors.Is(err, ErrBudget) {
		t.Fatalf("over the whole budget: %v, want ErrBudget", err)
	}
	if w, q := long.waits(); w != (budgetWaits{}) || q != 0 {
		t.Fatalf("over the whole budget: waits %+v, %d queued; want none", w, q)
	}
	cctx, cancel := context.WithCancel(ctx)
	head := startAcquire(cctx, long, 40, false)
	waitQueued(t, long, 1)
	behind := startAcquire(ctx, long, 20, false) // fits, but queued behind head
	waitQueued(t, long, 2)
	pending(t, behind, "behind")
	cancel()
	if err := <-head; !errors.Is(err, ErrBudget) {
		t.Fatalf("cancelled: %v, want ErrBudget", err)
	}
	granted(t, behind, "behind, once the head left")
	if used, _ := long.usage(); used != 90 {
		t.Fatalf("used %d, want 90", used)
	}
	if w, q := long.waits(); w.granted != 1 || w.refused != 1 || q != 0 {
		t.Fatalf("waits %+v, %d queued", w, q)
	}

	none := newKVBudget(100, 1, 1000, 0)
	if err := none.acquire(ctx, "t", 70, false); err != nil {
		t.Fatal(err)
	}
	if err := none.acquire(ctx, "t", 40, false); !errors.Is(err, ErrBudget) {
		t.Fatalf("no wait: %v", err)
	}
}

// TestBudgetInvariantsUnderRace: goroutines charging, waiting, giving up
// and releasing never charge more than the limit, and leave nothing
// charged or queued (run with -race).
func TestBudgetInvariantsUnderRace(t *testing.T) {
	b := newKVBudget(100, 1, 1000, 2*time.Millisecond)
	var wg sync.WaitGroup
	var over atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			held := int64(0)
			owner := string(rune('a' + g%3)) // three tenants
			for range 300 {
				if held > 0 && r.IntN(2) == 0 {
					b.release(owner, held)
					held = 0
					continue
				}
				n := 1 + r.Int64N(40)
				if b.acquire(context.Background(), owner, n, held > 0) == nil {
					held += n
				}
				if used, _ := b.usage(); used > 100 {
					over.Store(used)
				}
			}
			b.release(owner, held)
		}()
	}
	wg.Wait()
	if v := over.Load(); v != 0 {
		t.Fatalf("charged %d positions of a limit of 100", v)
	}
	if used, _ := b.usage(); used != 0 {
		t.Fatalf("%d positions charged at the end", used)
	}
	if _, q := b.waits(); q != 0 {
		t.Fatalf("%d charges queued at the end", q)
	}
}

// TestBudgetLargeChargeNotStarved: tenant b fills the budget with small
// streams and opens the next the moment one ends; tenant a waits for a
// larger one. b's next streams wait behind it, and a is served once three
// of b's have ended (passed by every other tenant, as once, a larger
// charge could wait for ever behind another tenant's stream of small
// ones).
func TestBudgetLargeChargeNotStarved(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newKVBudget(100, 1, 1000, time.Minute)
	for range 10 {
		if err := b.acquire(ctx, "b", 10, false); err != nil {
			t.Fatal(err)
		}
	}
	aDone := startAcquireFor(ctx, b, "a", 30, false)
	waitQueued(t, b, 1)
	var bNext []<-chan error
	for i := range 2 {
		b.release("b", 10)
		bNext = append(bNext, startAcquireFor(ctx, b, "b", 10, false))
		waitQueued(t, b, 2+i)
		pending(t, aDone, "a's 30")
	}
	b.release("b", 10)
	granted(t, aDone, "a's 30 after three of b's streams ended")
	for _, c := range bNext {
		pending(t, c, "b's next streams, a full budget")
	}
	cancel()
}

// TestBudgetNeverFittingChargeHoldsBackNoOtherTenant: a charge that could
// not fit even if every other tenant released all it holds (its own
// tenant's streams are in the way) holds back no other tenant: asking for
// it again and again once kept every other tenant out of a budget with
// room for them.
func TestBudgetNeverFittingChargeHoldsBackNoOtherTenant(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newKVBudget(100, 1, 1000, time.Minute)
	for _, c := range []struct {
		owner string
		n     int64
	}{{"b", 50}, {"a", 30}, {"a", 10}} {
		if err := b.acquire(ctx, c.owner, c.n, false); err != nil {
			t.Fatal(err)
		}
	}
	growth := startAcquireFor(ctx, b, "a", 70, true) // a would hold 110 of 100
	waitQueued(t, b, 1)
	aNew := startAcquireFor(ctx, b, "a", 5, false)
	waitQueued(t, b, 2)
	if err := b.acquire(ctx, "b", 10, false); err != nil {
		t.Fatalf("b's new stream, 10 of 10 free positions: %v", err)
	}
	pending(t, aNew, "a's new stream behind a's own growth")
	b.release("b", 60)
	pending(t, growth, "a's growth, a's own streams in the way")
	b.release("a", 30) // a's first stream ends: a's growth fits now
	granted(t, growth, "a's growth once a's own stream ended")
	granted(t, aNew, "a's new stream after it")
}

// TestBudgetGrowthAheadOfOwnTenantOnly: an open stream's growth goes ahead
// of its own tenant's new streams, not of another tenant's charge queued
// before it: ahead of every tenant's, one tenant's appends, asked again and
// again, kept another tenant's waiting stream behind them.
func TestBudgetGrowthAheadOfOwnTenantOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newKVBudget(100, 1, 1000, time.Minute)
	for _, c := range []struct {
		owner string
		n     int64
	}{{"b", 90}, {"a", 5}} {
		if err := b.acquire(ctx, c.owner, c.n, false); err != nil {
			t.Fatal(err)
		}
	}
	cNew := startAcquireFor(ctx, b, "c", 10, false) // 95+10 > 100
	waitQueued(t, b, 1)
	aNew := startAcquireFor(ctx, b, "a", 1, false)
	waitQueued(t, b, 2)
	aGrowth := startAcquireFor(ctx, b, "a", 10, true) // ahead of a's new stream, behind c's
	waitQueued(t, b, 3)
	b.release("b", 10) // 85 used: c's 10 fits first
	granted(t, cNew, "c's stream, queued before a's growth")
	pending(t, aGrowth, "a's growth (95+10)")
	b.release("b", 10) // 85 used: a's growth, then a's new stream
	granted(t, aGrowth, "a's growth")
	granted(t, aNew, "a's new stream after a's growth")
}

// TestBudgetGrowthNeverPassesAnotherTenantsEarlierCharge: b's 40 is
// queued (it fits: 50 of 100 used) behind a's new stream (60, waiting for
// c's release); a's append, asked after b's, queues behind b's, so when
// a's new stream's wait ends b's 40 is granted. Growth went ahead of its
// tenant's first waiting new stream once, passing b's charge between them
// and taking the room b was queued for (asked again and again, such
// appends kept b out for good).
func TestBudgetGrowthNeverPassesAnotherTenantsEarlierCharge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newKVBudget(100, 1, 1000, time.Minute)
	if err := b.acquire(ctx, "c", 40, false); err != nil {
		t.Fatal(err)
	}
	if err := b.acquire(ctx, "a", 10, false); err != nil {
		t.Fatal(err)
	}
	naCtx, naEnd := context.WithCancel(ctx)
	na := startAcquireFor(naCtx, b, "a", 60, false)
	waitQueued(t, b, 1)
	bNew := startAcquireFor(ctx, b, "b", 40, false)
	waitQueued(t, b, 2)
	aGrowth := startAcquireFor(ctx, b, "a", 30, true) // asked after b's 40
	select {
	case err := <-aGrowth:
		if err == nil {
			t.Errorf("a's growth, asked after b's 40, granted ahead of it")
		}
	case <-time.After(200 * time.Millisecond):
	}
	naEnd()
	<-na
	select {
	case err := <-bNew:
		if err != nil {
			t.Errorf("b's 40: %v", err)
		}
	case <-time.After(200 * time.Millisecond):
		used, _ := b.usage()
		t.Errorf("b's 40, queued first with room for it, still waits (%d of 100 used)", used)
	}
}
