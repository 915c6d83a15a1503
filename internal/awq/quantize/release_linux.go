package quantize

import (
	"syscall"
	"unsafe"
)

// releaseMapped tells the kernel this process no longer needs the pages of
// a memory-mapped source tensor, so walking a 16 GB checkpoint layer by
// layer keeps only about one layer resident. MADV_DONTNEED on a read-only
// file mapping only unmaps: the data stays in the file (and usually the
// page cache) and is read again if touched. Only whole pages inside b are
// advised; errors are ignored, as the advice only saves memory.
func releaseMapped(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(syscall.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := start + uintptr(len(b))
	lo, hi := (start+page-1)&^(page-1), end&^(page-1)
	if hi <= lo {
		return
	}
	_ = syscall.Madvise(b[lo-start:hi-start], syscall.MADV_DONTNEED)
}
