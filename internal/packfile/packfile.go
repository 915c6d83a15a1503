package packfile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/streamguard/streamguard/internal/mmap"
)

const (
	magic = "SGPACK\x00\x01"
	// prefix is the magic, the header's length and its CRC.
	prefix = len(magic) + 8 + 4
	// align is the alignment of every section's offset.
	align = 4096
	// maxHeader bounds the header a reader accepts before reading it: an
	// 8B model's is about 40 KiB.
	maxHeader = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Key is what a file's contents were derived from. A file is used only
// when its key equals the key of the model being loaded.
type Key struct {
	// Layout names the kernels' byte layout and its version.
	Layout  string   `json:"layout"`
	Sources []Source `json:"sources"`
}

// Entry is one unit of repacked weights: the projections it holds, in
// order, dimensions whose meaning the layout gives, and its sections.
type Entry struct {
	Names    []string  `json:"names"`
	Dims     []int     `json:"dims"`
	Sections []Section `json:"sections"`
}

// Section is a byte range of the file and its CRC-32C.
type Section struct {
	Off int64  `json:"off"`
	Len int64  `json:"len"`
	CRC uint32 `json:"crc"`
}

type header struct {
	Key     Key     `json:"key"`
	Entries []Entry `json:"entries"`
}

// StaleError reports a file written for other sources or another layout.
type StaleError struct{ Why string }

func (e *StaleError) Error() string { return "stale: " + e.Why }

// File is an open repacked-weights file, mapped read-only.
type File struct {
	data    []byte
	entries []Entry
	release func() error // unmaps data
}

// Open maps the file at path and checks its key against want and the
// placement of every section. Its sections' CRCs are checked by Check,
// which must pass for an entry before its bytes are used. A missing file
// gives an error wrapping fs.ErrNotExist, a file for other sources a
// *StaleError.
func Open(path string, want Key) (*File, error) {
	f, st, err := mmap.OpenFile(path)
	if errors.Is(err, mmap.ErrNotRegular) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkOwner(path, st); err != nil {
		return nil, err
	}
	size := st.Size()
	if size < int64(prefix) || size != int64(int(size)) {
		return nil, fmt.Errorf("%s: %d bytes is no repacked-weights file", path, size)
	}
	// Populated: Check reads every byte at once, and every step after.
	data, err := mmap.MapPopulated(f, int(size))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	h, err := parse(data)
	if err == nil {
		err = h.Key.differs(want)
	}
	if err != nil {
		mmap.Unmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{data: data, entries: h.Entries, release: func() error { return mmap.Unmap(data) }}, nil
}

// parse checks the magic, the header's CRC and the header itself, and that
// every section lies in b after the header, aligned.
func parse(b []byte) (*header, error) {
	if len(b) < prefix || string(b[:len(magic)]) != magic {
		return nil, errors.New("not a repacked-weights file (bad magic)")
	}
	n := binary.LittleEndian.Uint64(b[len(magic):])
	if n > maxHeader || n > uint64(len(b)-prefix) {
		return nil, fmt.Errorf("header of %d bytes does not fit the file's %d", n, len(b))
	}
	hb := b[prefix : prefix+int(n)]
	if crc32.Checksum(hb, castagnoli) != binary.LittleEndian.Uint32(b[len(magic)+8:]) {
		return nil, errors.New("header CRC mismatch")
	}
	return decodeHeader(hb, int64(prefix)+int64(n), int64(len(b)))
}

// decodeHeader decodes the header hb of a file of size bytes whose data
// starts at start, and checks that every section lies in the data,
// aligned.
func decodeHeader(hb []byte, start, size int64) (*header, error) {
	dec := json.NewDecoder(bytes.NewReader(hb))
	dec.DisallowUnknownFields()
	var h header
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if dec.More() {
		return nil, errors.New("header: data after the JSON object")
	}
	for i, e := range h.Entries {
		for j, s := range e.Sections {
			if s.Off < start || s.Off%align != 0 || s.Len < 0 || s.Len > size-s.Off {
				return nil, fmt.Errorf("entry %d section %d (%d bytes at %d) lies outside the file's data", i, j, s.Len, s.Off)
			}
		}
	}
	return &h, nil
}

// differs says how k differs from want, or nil.
func (k Key) differs(want Key) error {
	if k.Layout != want.Layout {
		return &StaleError{fmt.Sprintf("layout %q, want %q", k.Layout, want.Layout)}
	}
	if len(k.Sources) != len(want.Sources) {
		return &StaleError{fmt.Sprintf("%d source files, want %d", len(k.Sources), len(want.Sources))}
	}
	for i, s := range k.Sources {
		if w := want.Sources[i]; s != w {
			return &StaleError{fmt.Sprintf("source %s: %s", w.Name, s.diff(w))}
		}
	}
	return nil
}

// Entries are the file's units, in file order.
func (f *File) Entries() []Entry { return f.entries }

// Check verifies the CRCs of entry i's sections.
func (f *File) Check(i int) error {
	e := f.entries[i]
	for j, s := range e.Sections {
		if crc32.Checksum(f.section(s), castagnoli) != s.CRC {
			return fmt.Errorf("entry %d %q section %d: CRC mismatch", i, e.Names, j)
		}
	}
	return nil
}

// Section is entry i's section j, a read-only view valid until Close.
func (f *File) Section(i, j int) []byte { return f.section(f.entries[i].Sections[j]) }

func (f *File) section(s Section) []byte { return f.data[s.Off : s.Off+s.Len : s.Off+s.Len] }

// Size is the file's length in bytes.
func (f *File) Size() int64 { return int64(len(f.data)) }

// HugeMapped is how many of the file's bytes this process maps 2 MiB at a
// time (mmap.HugeMapped): all of them where the page cache holds the file
// in 2 MiB folios, which makes its first read several times faster.
func (f *File) HugeMapped() (int64, error) {
	n, err := mmap.HugeMapped(f.data)
	return int64(n), err
}

// Close unmaps the file: no section may be used after it.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	err := f.release()
	f.data, f.entries = nil, nil
	return err
}

func roundUp(n int64) int64 { return (n + align - 1) &^ (align - 1) }
