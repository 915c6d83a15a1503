//go:build !linux

package qwen3

import "github.com/streamguard/streamguard/internal/safetensors"

// releaseMapped is a no-op where MADV_PAGEOUT is not available.
func releaseMapped(...*safetensors.Tensor) {}
