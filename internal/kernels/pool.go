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
// results. The job's record is reused, so publishing one allocates
// nothing: a decode step publishes one per product and per layer's
// attention, and their garbage cost a few percent of the step.
type spinPool struct {
	busy    sync.Mutex // held by the goroutine whose job is published
	gen     atomic.Uint64
	job     poolJob    // the job of generation gen
	mu      sync.Mutex // guards started, parked and wakes cond
	cond    *sync.Cond
	started int
	parked  int
}

// poolJob is one parallel loop. A worker may still be leaving the
// previous job while the next is written, so claims carry the generation:
// a goroutine reads the loop's fields only after it has claimed a chunk
// of its own generation, and the publisher writes them only once every
// chunk of the one before has run.
type poolJob struct {
	// claims holds the generation (high 32 bits) and how many chunks are
	// still unclaimed (low 32 bits).
	claims  atomic.Uint64
	pending atomic.Int32 // chunks claimed or not that have not finished
	workers atomic.Int32 // goroutines numbered below it take part

	// Written before claims, read under a claim.
	rows   rangeRunner
	items  itemRunner // when set, every index of [0, n) is a chunk of its own
	n      int
	align  int
	chunks int
}

// rangeRunner runs the elements [lo, hi) of a parallel loop. Products pass
// values they keep between calls, so that a call allocates nothing; other
// loops pass a rangeFunc.
type rangeRunner interface{ runRange(lo, hi int) }

type rangeFunc func(lo, hi int)

func (f rangeFunc) runRange(lo, hi int) { f(lo, hi) }

// itemRunner runs item i of a loop on the goroutine numbered worker (below
// the loop's worker count), which may own scratch space.
type itemRunner interface{ RunItem(worker, i int) }

type itemFunc func(worker, i int)

func (f itemFunc) RunItem(worker, i int) { f(worker, i) }

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
	b := func(i int) int { return min(j.n, (blocks*i/j.chunks)*j.align) }
	return b(c), b(c + 1)
}

// work claims and runs chunks of generation gen until none are left;
// worker is the calling goroutine's number (the publishing goroutine is 0).
func (j *poolJob) work(worker int, gen uint32) {
	if int32(worker) >= j.workers.Load() {
		// Not needed (or the count of a later job: then the claims
		// below fail anyway).
		return
	}
	for {
		v := j.claims.Load()
		left := uint32(v)
		if uint32(v>>32) != gen || left == 0 {
			return
		}
		if !j.claims.CompareAndSwap(v, v-1) {
			continue
		}
		c := j.chunks - int(left)
		if j.items != nil {
			j.items.RunItem(worker, c)
		} else {
			lo, hi := j.bounds(c)
			j.rows.runRange(lo, hi)
		}
		j.pending.Add(-1)
	}
}

// run executes r over chunks of [0, n) on up to p goroutines.
// With fine, the loop is cut into several chunks per goroutine.
func (sp *spinPool) run(n, align, p int, fine bool, r rangeRunner) {
	if !sp.busy.TryLock() {
		r.runRange(0, n)
		return
	}
	defer sp.busy.Unlock()
	chunks := p
	if fine {
		chunks = min((n+align-1)/align, chunksPerWorker*p)
	}
	j := &sp.job
	j.rows, j.n, j.align, j.chunks = r, n, align, chunks
	sp.do(p)
}

// runItems runs r.RunItem(worker, i) for every i in [0, n) on up to p
// goroutines, handing indices out one at a time.
func (sp *spinPool) runItems(n, p int, r itemRunner) {
	if !sp.busy.TryLock() {
		for i := range n {
			r.RunItem(0, i)
		}
		return
	}
	defer sp.busy.Unlock()
	j := &sp.job
	j.items, j.n, j.chunks = r, n, n
	sp.do(p)
}

// do publishes the job whose fields the caller has set for goroutines
// numbered below p, starting pool goroutines up to p-1; takes part in it;
// and waits until every chunk has run. The caller holds busy.
func (sp *spinPool) do(p int) {
	j := &sp.job
	gen := sp.gen.Load() + 1
	j.workers.Store(int32(p))
	j.pending.Store(int32(j.chunks))
	j.claims.Store(uint64(uint32(gen))<<32 | uint64(uint32(j.chunks)))
	sp.mu.Lock()
	for sp.started < p-1 {
		sp.started++
		go sp.worker(sp.started, sp.gen.Load())
	}
	sp.gen.Store(gen)
	if sp.parked > 0 {
		sp.cond.Broadcast()
	}
	sp.mu.Unlock()
	j.work(0, uint32(gen))
	for i := 0; j.pending.Load() != 0; i++ {
		if i%256 == 255 { // rarely: the workers hold their processors
			runtime.Gosched()
		}
	}
	// Every chunk has run: nothing reads the loop any more.
	j.rows, j.items = nil, nil
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
		sp.job.work(id, uint32(seen))
	}
}
