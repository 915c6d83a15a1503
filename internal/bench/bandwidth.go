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
	threads = max(1, threads)
	words := make([]uint64, bytes/8)
	for i := range words {
		words[i] = uint64(i) // touch every page before timing
	}
	per := len(words) / threads &^ 7
	sums := make([]uint64, threads)
	best := time.Duration(0)
	for range 3 {
		var wg sync.WaitGroup
		start := time.Now()
		for t := range threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sums[t] = kernels.ReadSum(words[t*per : (t+1)*per])
			}()
		}
		wg.Wait()
		if el := time.Since(start); best == 0 || el < best {
			best = el
		}
	}
	if sums[0] == 1 { // keep the sums alive
		return 0
	}
	return float64(per*threads*8) / best.Seconds()
}
