//go:build !amd64 || purego

package kernels

// Without assembly only the pure-Go implementation is registered.

// prefetchSlice asks for the cache lines of s: nothing without assembly.
func prefetchSlice[T any](s []T) {}
