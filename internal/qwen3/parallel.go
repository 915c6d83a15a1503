package qwen3

import "github.com/streamguard/streamguard/internal/kernels"

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
