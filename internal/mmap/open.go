package mmap

import (
	"errors"
	"os"
)

// ErrNotRegular is OpenFile's error for a path that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenFile opens the regular file at path for reading. Anything else is
// refused before it is opened — a FIFO, whose open would block the caller
// for good, a device, a folder — and checked again once open, in case the
// path was swapped in between.
func OpenFile(path string) (*os.File, os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, ErrNotRegular
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = ErrNotRegular
		}
		return nil, nil, err
	}
	return f, st, nil
}
