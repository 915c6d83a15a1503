//go:build unix

package mmap

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOpenFileRefuses: a FIFO (whose open would block) and a folder are
// refused with ErrNotRegular, without blocking.
func TestOpenFileRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	for _, p := range []string{fifo, dir} {
		if _, _, err := OpenFile(p); !errors.Is(err, ErrNotRegular) {
			t.Errorf("OpenFile(%s): %v, want ErrNotRegular", p, err)
		}
	}
}
