package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"sync"

	"github.com/streamguard/streamguard/internal/mmap"
)

// File is an open safetensors file. Its methods are safe for concurrent
// use; the bytes of tensors it returns stay valid until Close.
type File struct {
	path   string
	stat   os.FileInfo // the file as opened
	header *Header
	data   []byte // the data buffer, a window of mapping: the file's tail

	mu      sync.RWMutex
	mapping []byte   // whole file; nil once closed
	fd      *os.File // for ReadAt; nil once closed
}

// Open reads and validates the header of the safetensors file at path and
// maps the file read-only. Tensor bytes are not read until used.
func Open(path string) (*File, error) {
	f, st, err := mmap.OpenFile(path)
	if errors.Is(err, mmap.ErrNotRegular) {
		return nil, &Error{File: path, Msg: "not a regular file"}
	}
	if err != nil {
		return nil, &Error{File: path, Msg: "open", Err: unwrapPath(err)}
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	size := st.Size()
	if size < 8 {
		return nil, &Error{File: path, Msg: fmt.Sprintf("file is %d bytes, too short for the 8-byte header length (truncated file?)", size)}
	}
	if size > math.MaxInt {
		return nil, &Error{File: path, Msg: fmt.Sprintf("file is %d bytes, too large to map on this platform", size)}
	}
	var prefix [8]byte
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, 8), prefix[:]); err != nil {
		return nil, &Error{File: path, Msg: "read header length", Err: unwrapPath(err)}
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxHeaderSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("header length %d is over the %d-byte limit (not a safetensors file?)", n, MaxHeaderSize)}
	}
	if n > uint64(size-8) {
		return nil, &Error{File: path, Msg: fmt.Sprintf("header length %d exceeds the %d bytes that follow it (truncated file?)", n, size-8)}
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(f, 8, int64(n)), hb); err != nil {
		return nil, &Error{File: path, Msg: "read header", Err: unwrapPath(err)}
	}
	dataStart := 8 + int64(n)
	h, err := ParseHeader(hb, size-dataStart)
	if err != nil {
		return nil, inFile(err, path)
	}
	m, err := mmap.Map(f, int(size))
	if err != nil {
		return nil, &Error{File: path, Msg: "map", Err: unwrapPath(err)}
	}
	sf := &File{path: path, stat: st, header: h, data: m[dataStart:], mapping: m}
	if mmap.Maps {
		// Kept open for ReadAt; where Map read a copy, the copy serves.
		sf.fd, keep = f, true
	}
	return sf, nil
}

// unwrapPath drops the *PathError layer whose path the *Error already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Stat describes the file that was opened, as it was then: the path may
// name another file by now (os.SameFile tells).
func (f *File) Stat() os.FileInfo { return f.stat }

// Header is the parsed header. It is shared: do not modify it.
func (f *File) Header() *Header { return f.header }

// Metadata is a copy of the header's __metadata__ (nil if absent).
func (f *File) Metadata() map[string]string { return maps.Clone(f.header.Metadata) }

// Names lists the tensor names, sorted.
func (f *File) Names() []string {
	names := make([]string, len(f.header.Tensors))
	for i, t := range f.header.Tensors {
		names[i] = t.Name
	}
	return names
}

// Info describes the named tensor without touching its bytes.
func (f *File) Info(name string) (TensorInfo, bool) { return f.header.Lookup(name) }

// Has reports whether the file holds the named tensor.
func (f *File) Has(name string) bool {
	_, ok := f.header.Lookup(name)
	return ok
}

// Tensor returns the named tensor with Data viewing the mapping (no copy).
func (f *File) Tensor(name string) (*Tensor, error) {
	info, ok := f.header.Lookup(name)
	if !ok {
		return nil, &Error{File: f.path, Tensor: name, Msg: "no such tensor"}
	}
	f.mu.RLock()
	data, start := f.data, int64(len(f.mapping)-len(f.data)) // data's offset in the file
	f.mu.RUnlock()
	if data == nil {
		return nil, &Error{File: f.path, Tensor: name, Msg: "file is closed"}
	}
	return &Tensor{
		Name:  info.Name,
		DType: info.DType,
		Shape: append([]int{}, info.Shape...),
		// The capacity limit makes append copy instead of writing into
		// the read-only mapping.
		Data:   data[info.Begin:info.End:info.End],
		File:   f.path,
		Source: f.source(),
		At:     start + info.Begin,
	}, nil
}

// source is the file as a Tensor's Source: nil where it holds a copy
// instead of a mapping.
func (f *File) source() io.ReaderAt {
	if !mmap.Maps {
		return nil
	}
	return f
}

// ReadAt reads the file's bytes at off with pread, not through the
// mapping: what it reads is not mapped into the process.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.fd == nil {
		return 0, &Error{File: f.path, Msg: "file is closed"}
	}
	return f.fd.ReadAt(p, off)
}

// ReleaseMapping unmaps the pages this process has mapped of the file
// (mmap.Release): they stay in the page cache, and a later read through
// the mapping maps them again. For a model that keeps nothing of the file
// but copies once loaded (an AWQ model, which maps the repacked-weights
// file instead), so that what it read while loading is not counted
// resident for as long as it runs.
func (f *File) ReleaseMapping() {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mapping != nil {
		mmap.Release(f.mapping)
	}
}

// Resident is how many bytes of the file this process has mapped in
// (mmap.Resident; an error where the system does not say).
func (f *File) Resident() (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return mmap.Resident(f.mapping)
}

// Close unmaps the file. Tensor data obtained from it must not be used
// afterwards. Closing twice is a no-op.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mapping == nil {
		return nil
	}
	err := mmap.Unmap(f.mapping)
	if f.fd != nil {
		f.fd.Close()
	}
	f.mapping, f.data, f.fd = nil, nil, nil
	if err != nil {
		return &Error{File: f.path, Msg: "unmap", Err: err}
	}
	return nil
}
