package packfile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
}

const (
	headBytes = 1 << 20
	page      = 4096
	// sampleStride is the step of the sampled pages: every tensor of a
	// real checkpoint that the pack holds spans megabytes, so a change to
	// one, even with the file's size and modification time kept (cp -p,
	// rsync -a, an image build's fixed timestamps), changes a sampled
	// page. Reading a page a MiB is 0.4% of the file: about 20 MB of an
	// 8B checkpoint, a few milliseconds from the page cache.
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
	case s.Stride != w.Stride:
		return "written by an older version, which sampled the contents more sparsely"
	case s.Sample != w.Sample:
		return "contents changed"
	}
	return fmt.Sprintf("name %q", s.Name)
}

// Describe computes the sources' part of a key for the files at paths.
func Describe(paths []string) ([]Source, error) {
	out := make([]Source, len(paths))
	for i, p := range paths {
		s, err := describe(p)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func describe(path string) (Source, error) {
	s := Source{Name: filepath.Base(path)}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			return s, err
		}
		s.Link = filepath.Base(target)
	}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, err
	}
	s.Size, s.ModTime, s.Stride = fi.Size(), fi.ModTime().UnixNano(), sampleStride
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
		for _, off := range offs {
			if _, err := io.Copy(h, io.NewSectionReader(f, off, page)); err != nil {
				return s, fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	s.Sample = hex.EncodeToString(h.Sum(nil))
	return s, nil
}
