//go:build !amd64 || purego

package kernels

// Without assembly only the pure-Go implementation is registered.
