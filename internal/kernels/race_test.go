//go:build race

package kernels

// raceEnabled: the race detector makes sync.Pool drop values at random,
// so allocation counts of pooled paths mean nothing under it.
const raceEnabled = true
