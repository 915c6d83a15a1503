package packfile

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// sequentialHash hashes the pages one after another, as the key did before
// it read them concurrently: the key of a file must not change with that.
func sequentialHash(f io.ReaderAt, offs []int64) []byte {
	h := sha256.New()
	for _, off := range offs {
		io.Copy(h, io.NewSectionReader(f, off, page))
	}
	return h.Sum(nil)
}

// TestHashPagesMatchesSequential: at sizes around a page and the batch of
// 256, with the last offset repeated, the concurrent hash is the
// sequential one.
func TestHashPagesMatchesSequential(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{headBytes + 1, headBytes + page - 1, headBytes + page, headBytes + page + 1,
		headBytes + sampleStride + page, headBytes + 300*sampleStride/100 + 17, headBytes + 257*sampleStride + 3} {
		p := filepath.Join(dir, "f")
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*31 + i/4096)
		}
		os.WriteFile(p, b, 0o644)
		f, _ := os.Open(p)
		offs := []int64{}
		for off := int64(headBytes); off+page <= size; off += sampleStride {
			offs = append(offs, off)
		}
		offs = append(offs, max(headBytes, size-page))
		h := sha256.New()
		if err := hashPages(h, f, offs, size); err != nil {
			t.Errorf("size %d: %v", size, err)
		}
		if string(h.Sum(nil)) != string(sequentialHash(f, offs)) {
			t.Errorf("size %d: hash differs from the sequential one", size)
		}
		f.Close()
	}
}

type errAt struct{ io.ReaderAt }

func (e errAt) ReadAt(b []byte, off int64) (int, error) {
	if off >= 3*sampleStride {
		return 0, errors.New("boom")
	}
	return len(b), nil
}

// TestHashPagesError: a read error is returned, whichever page fails.
func TestHashPagesError(t *testing.T) {
	offs := []int64{}
	for off := int64(headBytes); off < 600*sampleStride; off += sampleStride {
		offs = append(offs, off)
	}
	if err := hashPages(sha256.New(), errAt{}, offs, 601*sampleStride); err == nil || err.Error() != "boom" {
		t.Fatal(err)
	}
}
