//go:build unix

package safetensors

import (
	"path/filepath"
	"syscall"
	"testing"
)

// TestOpenFIFO: a named pipe must be refused, not block the open forever.
func TestOpenFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pipe.safetensors")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := Open(p)
	wantErr(t, err, p, "not a regular file")
}
