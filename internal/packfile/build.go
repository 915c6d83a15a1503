package packfile

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Unit describes an entry to build: its names, dimensions and the length
// of each section.
type Unit struct {
	Names []string
	Dims  []int
	Sizes []int64
}

// Builder is a repacked-weights file being built. The caller fills each
// section (Section), seals each entry (Seal: its CRCs), then Commits. The
// file appears at its path only on Commit, whole.
type Builder struct {
	path, tmp string
	h         header
	out       *output
	sealed    []bool
}

// Create lays out units under key and opens a temporary file beside path
// with space for all of them (reserved up front where the system can, so
// that a full disk fails here rather than while the sections are filled).
// The sections start zeroed.
func Create(path string, key Key, units []Unit) (*Builder, error) {
	h := header{Key: key, Entries: make([]Entry, len(units))}
	for i, u := range units {
		if len(u.Names) == 0 {
			return nil, fmt.Errorf("packfile: unit %d has no names", i)
		}
		e := Entry{Names: slices.Clone(u.Names), Dims: slices.Clone(u.Dims), Sections: make([]Section, len(u.Sizes))}
		for j, n := range u.Sizes {
			if n < 0 {
				return nil, fmt.Errorf("packfile: unit %d section %d has %d bytes", i, j, n)
			}
			// The widest offset and CRC, so that the header's space can be
			// fixed before the real ones are known.
			e.Sections[j] = Section{Off: 1 << 62, Len: n, CRC: 1<<32 - 1}
		}
		h.Entries[i] = e
	}
	bound, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	off := roundUp(int64(prefix + len(bound)))
	for i := range h.Entries {
		for j := range h.Entries[i].Sections {
			s := &h.Entries[i].Sections[j]
			s.Off, s.CRC = off, 0
			off = roundUp(off + s.Len)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := checkFolder(filepath.Dir(path)); err != nil {
		return nil, err
	}
	removeAbandoned(path)
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	out, err := newOutput(f, off)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &Builder{path: path, tmp: f.Name(), h: h, out: out, sealed: make([]bool, len(units))}, nil
}

// abandonedAfter is the age at which another builder's temporary file is
// taken for one left by a process that died: building the largest model's
// file takes seconds.
const abandonedAfter = time.Hour

// removeAbandoned deletes the temporary files of path that builders left
// behind (a load killed while repacking): each is as large as the whole
// file, and nothing else would ever remove them.
func removeAbandoned(path string) {
	matches, _ := filepath.Glob(path + ".tmp-*")
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > abandonedAfter {
			os.Remove(m)
		}
	}
}

// Section is entry i's section j, to fill.
func (b *Builder) Section(i, j int) []byte {
	s := b.h.Entries[i].Sections[j]
	return b.out.data[s.Off : s.Off+s.Len : s.Off+s.Len]
}

// Seal records the CRCs of entry i's sections once they are filled.
// Entries may be sealed concurrently, each once.
func (b *Builder) Seal(i int) {
	for j, s := range b.h.Entries[i].Sections {
		b.h.Entries[i].Sections[j].CRC = crc32.Checksum(b.out.data[s.Off:s.Off+s.Len], castagnoli)
	}
	b.sealed[i] = true
}

// Commit writes the header and puts the file at its path. The File it
// returns views the sections as filled, so matrices built over them stay
// valid until the File is closed — even when Commit fails (an unsealed
// entry, a rename refused): the error then says the file was not kept, and
// nothing is left behind on disk.
func (b *Builder) Commit() (*File, error) {
	f := &File{data: b.out.data, entries: b.h.Entries, release: b.out.release}
	for i, ok := range b.sealed {
		if !ok {
			b.out.finish()
			os.Remove(b.tmp)
			return f, fmt.Errorf("packfile: entry %d not sealed", i)
		}
	}
	hb, err := json.Marshal(b.h)
	if err == nil && len(b.h.Entries) > 0 && len(b.h.Entries[0].Sections) > 0 && int64(prefix+len(hb)) > b.h.Entries[0].Sections[0].Off {
		err = fmt.Errorf("packfile: header outgrew its space") // cannot happen: the layout bounded it
	}
	if err == nil {
		pre := b.out.data[:prefix]
		copy(pre, magic)
		binary.LittleEndian.PutUint64(pre[len(magic):], uint64(len(hb)))
		binary.LittleEndian.PutUint32(pre[len(magic)+8:], crc32.Checksum(hb, castagnoli))
		copy(b.out.data[prefix:], hb)
	}
	if ferr := b.out.finish(); err == nil {
		err = ferr
	}
	if err == nil {
		err = os.Rename(b.tmp, b.path)
	}
	if err != nil {
		os.Remove(b.tmp)
	}
	return f, err
}

// Abort discards the file being built.
func (b *Builder) Abort() {
	b.out.abort()
	os.Remove(b.tmp)
}
