//go:build !linux

package packfile

import "os"

// output is the file being built, in memory: Commit writes it.
type output struct {
	f    *os.File
	data []byte
}

func newOutput(f *os.File, size int64) (*output, error) {
	return &output{f: f, data: make([]byte, size)}, nil
}

func (o *output) finish() error {
	_, err := o.f.Write(o.data)
	if err == nil {
		err = o.f.Chmod(0o644)
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// release drops the memory (the garbage collector frees it).
func (o *output) release() error { return nil }

func (o *output) abort() { o.f.Close() }
