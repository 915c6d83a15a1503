package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// spinPool runs parallel loops on persistent workers that, after finishing
// a job, poll briefly for the next one before parking: a model step issues
// hundreds of matrix products back to back, and a parked goroutine takes
// several microseconds to wake.
//
// One job runs at a time; a caller that finds the pool busy (another
// goroutine's product) runs its loop alone, which changes nothing in the
// results.
type spinPool struct {
	busy    sync.Mutex // held by the goroutine whose job is published
	gen     atomic.Uint64
	job     atomic.Pointer[poolJob]
	mu      sync.Mutex // guards started, parked and wakes cond
	cond    *sync.Cond
	started int
	parked  int
}

type poolJob struct {
	fn      func(lo, hi int)
	n       int
	align   int
	chunks  int32
	next    atomic.Int32
	pending atomic.Int32

	// item, when set, replaces fn: every index of [0, n) is a chunk of
	// its own, run as item(worker, i) by goroutines whose worker number is
	// below workers, so that each can own scratch space.
	item    func(worker, i int)
	workers int
}

// chunksPerWorker is how many pieces a long loop is cut into per
// goroutine (parallelRowsBalanced).
const chunksPerWorker = 4

// spinFor is how long an idle worker polls before parking. It outlasts
// the pauses of the publishing goroutine between jobs of one step — its
// own serial work, and interruptions it does not control (on a virtual
// machine, tens of microseconds several times a step): a worker parked
// in such a pause takes tens of microseconds to wake for the next job,
// which meanwhile runs on fewer goroutines. Bounded, so that an idle
// engine gives its processors back promptly.
const spinFor = 200 * time.Microsecond

var pool = func() *spinPool {
	p := &spinPool{}
	p.cond = sync.NewCond(&p.mu)
	return p
}()

func (j *poolJob) bounds(c int) (lo, hi int) {
	blocks := (j.n + j.align - 1) / j.align
	b := func(i int) int { return min(j.n, (blocks*i/int(j.chunks))*j.align) }
	return b(c), b(c + 1)
}

// work claims and runs chunks until none are left; worker is the calling
// goroutine's number (the publishing goroutine is 0).
func (j *poolJob) work(worker int) {
	if j.item != nil && worker >= j.workers {
		return
	}
	for {
		c := j.next.Add(1) - 1
		if c >= j.chunks {
			return
		}
		if j.item != nil {
			j.item(worker, int(c))
		} else {
			lo, hi := j.bounds(int(c))
			j.fn(lo, hi)
		}
		j.pending.Add(-1)
	}
}

// run executes fn over chunks of [0, n) on up to p goroutines.
// With fine, the loop is cut into several chunks per goroutine.
func (sp *spinPool) run(n, align, p int, fine bool, fn func(lo, hi int)) {
	if !sp.busy.TryLock() {
		fn(0, n)
		return
	}
	defer sp.busy.Unlock()
	chunks := p
	if fine {
		chunks = min((n+align-1)/align, chunksPerWorker*p)
	}
	sp.do(&poolJob{fn: fn, n: n, align: align, chunks: int32(chunks)}, p)
}

// runItems runs item(worker, i) for every i in [0, n) on up to p
// goroutines, handing indices out one at a time.
func (sp *spinPool) runItems(n, p int, item func(worker, i int)) {
	if !sp.busy.TryLock() {
		for i := range n {
			item(0, i)
		}
		return
	}
	defer sp.busy.Unlock()
	sp.do(&poolJob{item: item, n: n, chunks: int32(n), workers: p}, p)
}

// do publishes j to the workers, starting up to p-1 of them, takes part
// in it, and waits until every chunk has run. The caller holds busy.
func (sp *spinPool) do(j *poolJob, p int) {
	j.pending.Store(j.chunks)
	sp.job.Store(j)
	sp.mu.Lock()
	for sp.started < p-1 {
		sp.started++
		go sp.worker(sp.started, sp.gen.Load())
	}
	sp.gen.Add(1)
	if sp.parked > 0 {
		sp.cond.Broadcast()
	}
	sp.mu.Unlock()
	j.work(0)
	for i := 0; j.pending.Load() != 0; i++ {
		if i%256 == 255 { // rarely: the workers hold their processors
			runtime.Gosched()
		}
	}
	sp.job.Store(nil)
}

// worker is pool goroutine number id (from 1), which has seen generation
// seen.
func (sp *spinPool) worker(id int, seen uint64) {
	for {
		// Poll for a new generation, then park. Polling does not yield
		// the processor (a yield costs a trip through the scheduler's
		// lock, and the next job waits on it) unless there are more pool
		// goroutines than processors: then a poller would keep the one
		// holding the work off its processor.
		deadline := time.Now().Add(spinFor)
		yield := Threads() > runtime.GOMAXPROCS(0)
		for i := 0; sp.gen.Load() == seen; i++ {
			if i%64 == 63 {
				if yield {
					runtime.Gosched()
				}
				if time.Now().After(deadline) {
					sp.mu.Lock()
					for sp.gen.Load() == seen {
						sp.parked++
						sp.cond.Wait()
						sp.parked--
					}
					sp.mu.Unlock()
					break
				}
			}
		}
		seen = sp.gen.Load()
		if j := sp.job.Load(); j != nil {
			j.work(id)
		}
	}
}
