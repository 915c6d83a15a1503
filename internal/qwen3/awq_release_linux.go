package qwen3

import (
	"syscall"
	"unsafe"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4), missing from package syscall.
const madvPageout = 21

// releaseMapped asks the kernel to reclaim the pages of tensors read from a
// mapped checkpoint once they have been repacked: otherwise the mapped
// codes stay resident next to their repacked copy and double the weights'
// memory. MADV_PAGEOUT never discards data (file pages are re-read, anonymous
// ones swapped), so a tensor that is not in fact mapped stays correct. Only
// whole pages inside the tensor are advised; errors (older kernels) are
// ignored, as the advice only saves memory.
func releaseMapped(ts ...*safetensors.Tensor) {
	page := uintptr(syscall.Getpagesize())
	for _, t := range ts {
		if t == nil || t.File == "" || len(t.Data) == 0 {
			continue
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))
		end := start + uintptr(len(t.Data))
		lo, hi := (start+page-1)&^(page-1), end&^(page-1)
		if hi <= lo {
			continue
		}
		b := t.Data[lo-start : hi-start]
		_ = syscall.Madvise(b, madvPageout)
	}
}
