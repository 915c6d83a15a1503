package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

var threads atomic.Int32

func init() { threads.Store(int32(runtime.GOMAXPROCS(0))) }

// MaxThreads bounds SetThreads: a forward keeps scratch memory per
// thread, so a number given by mistake (1<<22 took 586 MB on a toy
// model) must not size it; no machine has this many cores.
const MaxThreads = 1024

// SetThreads sets how many goroutines a matrix product uses; n is clamped
// to 1..MaxThreads (callers refuse values out of that range first).
func SetThreads(n int) {
	n = min(max(n, 1), MaxThreads)
	threads.Store(int32(n))
}

// Threads reports the goroutine count matrix products use.
func Threads() int { return int(threads.Load()) }

// chunk is one share of a parallel loop.
type chunk struct {
	r      rangeRunner
	lo, hi int
	wg     *sync.WaitGroup
}

// workers is a persistent pool: handing a chunk to a parked goroutine
// through a channel avoids creating one per call. Workers are started on
// first use and live for the life of the process.
var workers struct {
	mu sync.Mutex
	ch []chan chunk
}

// worker returns the channel of pool worker i, starting workers up to i.
func worker(i int) chan chunk {
	workers.mu.Lock()
	defer workers.mu.Unlock()
	for len(workers.ch) <= i {
		ch := make(chan chunk, 4)
		workers.ch = append(workers.ch, ch)
		go func() {
			for c := range ch {
				c.r.runRange(c.lo, c.hi)
				c.wg.Done()
			}
		}()
	}
	return workers.ch[i]
}

// poolMode selects how parallelRows hands out chunks; benchmarks compare
// them.
var poolMode = poolSpin

const (
	poolSpin  = iota // spinPool
	poolChan         // parked workers fed by channels
	poolSpawn        // a goroutine per chunk per call
)

// parallelRows splits [0, n) into at most Threads() contiguous chunks whose
// boundaries are multiples of align, and runs r on each; the calling
// goroutine takes the first chunk. Chunk boundaries never change results:
// kernels compute each output element independently of its neighbours.
func parallelRows(n, align int, r rangeRunner) { parallelChunks(n, align, false, r) }

// parallelRowsBalanced is parallelRows for long loops (prefill products):
// with several chunks per goroutine, handed out as goroutines finish, a
// core slowed by other work takes fewer of them instead of holding the
// whole product back with a fixed half.
func parallelRowsBalanced(n, align int, r rangeRunner) { parallelChunks(n, align, true, r) }

func parallelChunks(n, align int, fine bool, r rangeRunner) {
	p := Threads()
	blocks := (n + align - 1) / align
	if p > blocks {
		p = blocks
	}
	if p <= 1 {
		r.runRange(0, n)
		return
	}
	if poolMode == poolSpin {
		pool.run(n, align, p, fine, r)
		return
	}
	var wg sync.WaitGroup
	bound := func(i int) int { return min(n, (blocks*i/p)*align) }
	wg.Add(p - 1)
	for i := 1; i < p; i++ {
		c := chunk{r: r, lo: bound(i), hi: bound(i + 1), wg: &wg}
		if poolMode == poolSpawn {
			go func() {
				c.r.runRange(c.lo, c.hi)
				c.wg.Done()
			}()
		} else {
			worker(i - 1) <- c
		}
	}
	r.runRange(0, bound(1))
	wg.Wait()
}

// ParallelFor runs fn(worker, i) for every i in [0, n) on up to workers
// goroutines (at most Threads()), on the pool that the matrix products
// use, handing indices out one at a time so that uneven items balance.
// worker is below workers and numbers the goroutine running the item, for
// scratch space. Loops of the model that are not matrix products (the
// attention of each head, loading) run through it, so one set of
// goroutines serves a whole forward.
func ParallelFor(n, workers int, fn func(worker, i int)) { ParallelItems(n, workers, itemFunc(fn)) }

// ItemRunner runs item i of a ParallelItems loop on the goroutine numbered
// worker.
type ItemRunner = itemRunner

// ParallelItems is ParallelFor with the items' work as a value: one the
// caller keeps between calls (a pointer into its workspace) makes the
// call allocate nothing, where a closure passed to ParallelFor is
// allocated each time.
func ParallelItems(n, workers int, r ItemRunner) {
	p := min(workers, n, Threads())
	if p <= 1 {
		for i := range n {
			r.RunItem(0, i)
		}
		return
	}
	pool.runItems(n, p, r)
}

// ParallelRange runs fn over [0, n) cut into contiguous chunks whose
// boundaries are multiples of align, one per goroutine of the pool (at most
// Threads()): for long loops whose elements are independent.
func ParallelRange(n, align int, fn func(lo, hi int)) { parallelRows(n, align, rangeFunc(fn)) }
