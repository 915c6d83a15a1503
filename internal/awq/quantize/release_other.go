//go:build !linux

package quantize

// releaseMapped is a no-op where the checkpoint is read into memory or
// madvise is not available.
func releaseMapped([]byte) {}
