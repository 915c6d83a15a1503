package bench

import (
	"runtime"
	"sync"
	"time"

	"github.com/streamguard/streamguard/internal/kernels"
)

// ReadBandwidth measures how fast the given number of goroutines can read
// memory: each sums its share of a buffer of the given size (much larger
// than the caches) with kernels.ReadSum (vector loads where the CPU has
// them, so a slow core's adder is not what is measured), and the best of three
// passes counts. It is the ceiling a memory-bound decode step can reach on
// this machine now, measured in the same run as the step itself.
func ReadBandwidth(bytes int64, threads int) (bytesPerSecond float64) {
	return (&readProbe{bytes: bytes, threads: max(1, threads)}).measure()
}

// readProbe measures the read bandwidth more than once in a run (before
// and after the timed steps) and keeps the best pass.
type readProbe struct {
	bytes   int64
	threads int
	best    time.Duration
}

// measure times three passes over a fresh buffer and returns the bandwidth
// of the best pass of this and every earlier call. The buffer is given
// back before it returns (and collected), so that the memory the run
// reports is the model's and its caches', not the probe's on top of them.
func (p *readProbe) measure() float64 {
	bw := p.passes()
	runtime.GC() // the buffer is garbage once passes returns
	return bw
}

func (p *readProbe) passes() float64 {
	words := make([]uint64, p.bytes/8)
	for i := range words {
		words[i] = uint64(i) // touch every page before timing
	}
	per := len(words) / p.threads &^ 7
	if per == 0 {
		return 0
	}
	sums := make([]uint64, p.threads)
	for range 3 {
		var wg sync.WaitGroup
		start := time.Now()
		for t := range p.threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sums[t] = kernels.ReadSum(words[t*per : (t+1)*per])
			}()
		}
		wg.Wait()
		if el := time.Since(start); p.best == 0 || el < p.best {
			p.best = el
		}
	}
	if sums[0] == 1 { // keep the sums alive
		return 0
	}
	return float64(per*p.threads*8) / p.best.Seconds()
}
