package bench

import (
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
	return newReadProbe(bytes, threads).measure()
}

// readProbe is ReadBandwidth's buffer, kept so that a run can measure
// more than once (before and after its timed steps) without touching
// fresh memory each time.
type readProbe struct {
	words   []uint64
	threads int
	best    time.Duration
}

func newReadProbe(bytes int64, threads int) *readProbe {
	p := &readProbe{words: make([]uint64, bytes/8), threads: max(1, threads)}
	for i := range p.words {
		p.words[i] = uint64(i) // touch every page before timing
	}
	return p
}

// measure times three passes and returns the bandwidth of the best pass
// of this and every earlier call.
func (p *readProbe) measure() float64 {
	per := len(p.words) / p.threads &^ 7
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
				sums[t] = kernels.ReadSum(p.words[t*per : (t+1)*per])
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
