package qwen3

import (
	"sync"
	"sync/atomic"

	"github.com/streamguard/streamguard/internal/kernels"
)

// parallelFor runs fn(worker, i) for i in [0, n) on up to kernels.Threads()
// goroutines, handing out indices one at a time so that uneven items (the
// attention of late positions costs more than early ones) balance. worker
// is in [0, workers) and indexes per-goroutine scratch.
func parallelFor(n, workers int, fn func(worker, i int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	run := func(w int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(w, i)
		}
	}
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(w)
		}()
	}
	run(0)
	wg.Wait()
}

// workersFor picks how many goroutines a loop of n items costing about
// cost multiply-adds each deserves: small loops stay on the calling
// goroutine, since starting helpers costs microseconds.
func workersFor(n int, cost int) int {
	const serialWork = 1 << 15
	if n*cost < serialWork {
		return 1
	}
	return min(n, kernels.Threads())
}
