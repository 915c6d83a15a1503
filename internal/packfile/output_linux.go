package packfile

import (
	"os"
	"syscall"

	"github.com/streamguard/streamguard/internal/mmap"
)

// output is the file being built, mapped writable and shared: the caller
// fills the page cache's pages directly, so building costs no copy and the
// File that Commit returns views the same pages.
type output struct {
	f    *os.File
	data []byte
}

// newOutput reserves size bytes for f (fallocate: a full disk fails here,
// not with SIGBUS while the mapping is filled) and maps them.
func newOutput(f *os.File, size int64) (*output, error) {
	if size != int64(int(size)) {
		return nil, syscall.EFBIG
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		return nil, &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	// Before the first byte is written: the page cache then holds the file
	// in 2 MiB folios where the filesystem can, and every load that maps it
	// while it stays cached maps it 2 MiB at a time (mmap.MapPopulated).
	mmap.AdviseHugePages(data)
	return &output{f: f, data: data}, nil
}

// finish makes the file readable by others (models are often shared
// between users and containers) and closes it, keeping the mapping.
func (o *output) finish() error {
	err := o.f.Chmod(0o644)
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// release unmaps the file.
func (o *output) release() error { return syscall.Munmap(o.data) }

func (o *output) abort() {
	o.f.Close()
	o.release()
}
