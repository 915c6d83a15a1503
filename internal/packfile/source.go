package packfile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Source identifies one file a pack was derived from.
type Source struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	// Link is the base name of the file's symbolic link target, if it is
	// one: in a Hugging Face hub cache, the blob's SHA-256.
	Link string `json:"link,omitempty"`
	// Sample is the SHA-256 of the first headBytes and of one page every
	// Stride bytes after them, and the last page.
	Sample string `json:"sample"`
	// Stride is the sampling's step (sampleStride); 0 in a file written
	// when the samples were 16 pages spread over the whole file.
	Stride int64 `json:"sample_stride,omitempty"`
	// TensorPages is how many tensors' first pages were sampled besides
	// (Input.Starts); 0 in a file written before they were.
	TensorPages int `json:"tensor_pages,omitempty"`
}

// sampleReaders read a batch of sampled pages at once: from a cold cache
// each read waits on the device (a network volume: a millisecond). On a
// 2 GiB file on this project's VM disk, three rounds: 69-74 ms cold and
// 14-26 ms warm, against 113-122 ms and 25-48 ms read one after another.
const sampleReaders = 16

// hashPages writes the page at each offset (cut at size) into h, in
// order, reading a batch of them concurrently.
func hashPages(h io.Writer, f io.ReaderAt, offs []int64, size int64) error {
	const batch = 256
	buf := make([]byte, batch*page)
	lens := make([]int, batch)
	errs := make([]error, batch)
	for len(offs) > 0 {
		n := min(batch, len(offs))
		var wg sync.WaitGroup
		next := make(chan int)
		for range min(sampleReaders, n) {
			wg.Go(func() {
				for i := range next {
					lens[i] = int(min(page, size-offs[i]))
					_, errs[i] = f.ReadAt(buf[i*page:i*page+lens[i]], offs[i])
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				return errs[i]
			}
			h.Write(buf[i*page : i*page+lens[i]])
		}
		offs = offs[n:]
	}
	return nil
}

const (
	headBytes = 1 << 20
	page      = 4096
	// sampleStride is the step of the sampled pages: a change that spans
	// a MiB, even with the file's size and modification time kept (cp -p,
	// rsync -a, an image build's fixed timestamps), changes a sampled
	// page; a smaller tensor replaced whole changes its first page
	// (Input.Starts). Reading a page a MiB is 0.4% of the file: about
	// 20 MB of an 8B checkpoint (see sampleReaders for what it costs).
	sampleStride = 1 << 20
)

func (s Source) diff(w Source) string {
	switch {
	case s.Size != w.Size:
		return fmt.Sprintf("size %d, now %d", s.Size, w.Size)
	case s.ModTime != w.ModTime:
		return "modification time changed"
	case s.Link != w.Link:
		return fmt.Sprintf("link target %q, now %q", s.Link, w.Link)
	case s.Stride != w.Stride || (s.TensorPages == 0) != (w.TensorPages == 0):
		return "written by an older version, which sampled the contents more sparsely"
	case s.TensorPages != w.TensorPages:
		return fmt.Sprintf("%d tensors sampled, now %d", s.TensorPages, w.TensorPages)
	case s.Sample != w.Sample:
		return "contents changed"
	}
	return fmt.Sprintf("name %q", s.Name)
}

// Input is one source file to describe.
type Input struct {
	Path string
	// Opened is the file the load has open, as it was when opened (nil:
	// whatever is at Path). The file at Path must be that same file: one
	// renamed over it while the model loaded (a sync, a hub download, a
	// flipped symbolic link) would give the weights repacked from the open
	// file the new file's key, and every later load of the new file would
	// map them.
	Opened os.FileInfo
	// Starts are the offsets in the file of the tensors the pack is made
	// from. The first page of each is sampled as well, so that a tensor
	// replaced whole is caught however small it is (an AWQ scale tensor is
	// a few KiB and may lie between two of the stride's pages).
	Starts []int64
}

// Describe computes the sources' part of a key for the inputs.
func Describe(in []Input) ([]Source, error) {
	out := make([]Source, len(in))
	for i, f := range in {
		s, err := describe(f)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// errReplaced is describe's error for a file replaced since the load
// opened it.
var errReplaced = errors.New("replaced while the model loaded")

// readLink is the base name of path's symbolic link target, or "" when
// path is not a link.
func readLink(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return "", nil // not a link; Open reports a missing file
	}
	target, err := os.Readlink(path)
	if err != nil {
		return "", err
	}
	return filepath.Base(target), nil
}

func describe(in Input) (Source, error) {
	path := in.Path
	s := Source{Name: filepath.Base(path)}
	link, err := readLink(path)
	if err != nil {
		return s, err
	}
	s.Link = link
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, err
	}
	if in.Opened != nil && !os.SameFile(in.Opened, fi) {
		return s, fmt.Errorf("%s: %w", path, errReplaced)
	}
	// The link is read again once the file is open: one that changed in
	// between would name another blob than the one described.
	if again, err := readLink(path); err != nil || again != link {
		return s, fmt.Errorf("%s: %w", path, errReplaced)
	}
	s.Size, s.ModTime, s.Stride = fi.Size(), fi.ModTime().UnixNano(), sampleStride
	s.TensorPages = len(in.Starts)
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, min(s.Size, headBytes))); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.Size > headBytes {
		offs := []int64{}
		for off := int64(headBytes); off+page <= s.Size; off += sampleStride {
			offs = append(offs, off)
		}
		offs = append(offs, max(headBytes, s.Size-page)) // the end, wherever the stride stops
		for _, off := range in.Starts {
			if off >= headBytes && off < s.Size { // the head is hashed whole
				offs = append(offs, off)
			}
		}
		slices.Sort(offs)
		offs = slices.Compact(offs)
		if err := hashPages(h, f, offs, s.Size); err != nil {
			return s, fmt.Errorf("%s: %w", path, err)
		}
	}
	s.Sample = hex.EncodeToString(h.Sum(nil))
	return s, nil
}
