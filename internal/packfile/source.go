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
	// Sample is the SHA-256 of the first headBytes and of samples pages
	// spread over the rest.
	Sample string `json:"sample"`
}

const (
	headBytes = 1 << 20
	samples   = 16
	page      = 4096
)

func (s Source) diff(w Source) string {
	switch {
	case s.Size != w.Size:
		return fmt.Sprintf("size %d, now %d", s.Size, w.Size)
	case s.ModTime != w.ModTime:
		return "modification time changed"
	case s.Link != w.Link:
		return fmt.Sprintf("link target %q, now %q", s.Link, w.Link)
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
	s.Size, s.ModTime = fi.Size(), fi.ModTime().UnixNano()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, min(s.Size, headBytes))); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if rest := s.Size - headBytes; rest > page {
		for i := range int64(samples) {
			off := headBytes + i*(rest-page)/(samples-1)
			if _, err := io.Copy(h, io.NewSectionReader(f, off, page)); err != nil {
				return s, fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	s.Sample = hex.EncodeToString(h.Sum(nil))
	return s, nil
}
