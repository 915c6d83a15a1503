package kernels

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// countRows counts, per index, how often a loop ran it.
type countRows struct{ hits []atomic.Int32 }

func (c *countRows) runRange(lo, hi int) {
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
}

// countItems does the same for items and records the largest worker
// number seen.
type countItems struct {
	hits      []atomic.Int32
	maxWorker atomic.Int32
}

func (c *countItems) RunItem(w, i int) {
	c.hits[i].Add(1)
	for {
		m := c.maxWorker.Load()
		if int32(w) <= m || c.maxWorker.CompareAndSwap(m, int32(w)) {
			break
		}
	}
}

// checkOnce reports (with t.Errorf, which goroutines may call) whether
// every index ran exactly once.
func checkOnce(t *testing.T, what string, hits []atomic.Int32) bool {
	t.Helper()
	for i := range hits {
		if n := hits[i].Load(); n != 1 {
			t.Errorf("%s: index %d ran %d times, want 1", what, i, n)
			return false
		}
	}
	return true
}

// TestPoolRunsEveryIndexOnce publishes jobs of changing sizes back to back
// from several goroutines at once (the pool's job record is reused, and
// a goroutine that finds it busy runs its loop alone): every index of
// every loop runs exactly once, and items run only on the goroutines
// they were given. Run with -race.
func TestPoolRunsEveryIndexOnce(t *testing.T) {
	defer SetThreads(Threads())
	for _, threads := range []int{2, 3, 5} {
		SetThreads(threads)
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for round := range 200 {
					n := 1 + (round*37+g*11)%300
					align := []int{1, 4, 16}[round%3]
					rows := &countRows{hits: make([]atomic.Int32, n)}
					parallelChunks(n, align, round%2 == 0, rows)
					if !checkOnce(t, fmt.Sprintf("threads %d rows n=%d align=%d", threads, n, align), rows.hits) {
						return
					}

					workers := 1 + round%threads
					items := &countItems{hits: make([]atomic.Int32, n)}
					ParallelItems(n, workers, items)
					if !checkOnce(t, fmt.Sprintf("threads %d items n=%d", threads, n), items.hits) {
						return
					}
					if w := items.maxWorker.Load(); w >= int32(workers) {
						t.Errorf("threads %d: an item ran on worker %d of %d", threads, w, workers)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

// TestPoolAllocatesNothing: handing the goroutines a loop whose work is a
// value the caller keeps allocates nothing, nor do the products built on
// it (a decode step runs hundreds).
func TestPoolAllocatesNothing(t *testing.T) {
	defer SetThreads(Threads())
	SetThreads(2)
	rows := &countRows{hits: make([]atomic.Int32, 4096)}
	items := &countItems{hits: make([]atomic.Int32, 64)}
	if a := testing.AllocsPerRun(200, func() { parallelRows(4096, 16, rows) }); a != 0 {
		t.Errorf("parallelRows: %v allocations a call, want 0", a)
	}
	if a := testing.AllocsPerRun(200, func() { ParallelItems(64, 2, items) }); a != 0 {
		t.Errorf("ParallelItems: %v allocations a call, want 0", a)
	}
	if raceEnabled {
		t.Log("products not counted: the race detector makes sync.Pool drop values")
		return
	}
	const K, N = 1024, 2048 // large enough to run on both goroutines
	x, dst := make([]float32, K), make([]float32, N)
	w := make([]uint16, K*N)
	if a := testing.AllocsPerRun(50, func() { MatMulBF16(dst, x, w, 1, K, N) }); a != 0 {
		t.Errorf("MatMulBF16: %v allocations a call, want 0", a)
	}
	m, err := RepackAWQ(make([]int32, K*N/8), make([]int32, K/128*N/8), make([]uint16, K/128*N), K, N, 128)
	if err != nil {
		t.Fatal(err)
	}
	MatMulInt4(dst, x, m, 1) // the pooled activations exist
	if a := testing.AllocsPerRun(50, func() { MatMulInt4(dst, x, m, 1) }); a != 0 {
		t.Errorf("MatMulInt4: %v allocations a call, want 0", a)
	}
}
