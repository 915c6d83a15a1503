package bench

import (
	"sync"
	"time"
)

// ReadBandwidth measures how fast the given number of goroutines can read
// memory: each sums its share of a buffer of the given size (much larger
// than the caches) with eight independent chains, and the best of three
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
				sums[t] = sum8(words[t*per : (t+1)*per])
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

func sum8(w []uint64) uint64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 uint64
	for i := 0; i+8 <= len(w); i += 8 {
		s0 += w[i]
		s1 += w[i+1]
		s2 += w[i+2]
		s3 += w[i+3]
		s4 += w[i+4]
		s5 += w[i+5]
		s6 += w[i+6]
		s7 += w[i+7]
	}
	return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}
