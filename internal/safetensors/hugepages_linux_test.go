package safetensors

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/mmap"
)

// hugeFile writes a safetensors file whose tensor "w" is 16 MiB, behind a
// header of a few dozen bytes, 256 KiB per Write as the model generator and
// the quantizer stream tensors; it skips the test where the page cache
// keeps no file of the folder in 2 MiB folios.
func hugeFile(t *testing.T) (path string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	if ok, err := mmap.HugeFoliosIn(dir); err != nil || !ok {
		t.Skipf("the page cache keeps no file of %s in 2 MiB folios (%v): nothing to check", dir, err)
	}
	data = bytes.Repeat([]byte("safetensors data"), 1<<20)
	path = filepath.Join(dir, "model.safetensors")
	w, err := Create(path, nil, []TensorSpec{{Name: "w", DType: U8, Shape: []int{len(data)}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Begin("w"); err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; p = p[256<<10:] {
		if _, err := w.Write(p[:256<<10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// mappedHuge opens path, reads tensor w whole and returns how many of its
// bytes are mapped 2 MiB at a time.
func mappedHuge(t *testing.T, path string, want []byte) int {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := f.Tensor("w")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Data, want) {
		t.Fatal("tensor bytes differ from those written")
	}
	n, err := mmap.HugeMapped(w.Data)
	if err != nil {
		t.Skipf("cannot see how the file is mapped: %v", err)
	}
	return n
}

// TestWriterHugeFolios: a file the Writer wrote is cached in 2 MiB folios
// (whole 4 MiB pieces, package folio), so that reading a tensor maps it 2
// MiB at a time — all of its 2 MiB-aligned ranges, 14 of its 16 MiB behind
// the header. Written through a 1 MiB buffer (flushed wherever the header
// left it), none was.
func TestWriterHugeFolios(t *testing.T) {
	path, data := hugeFile(t)
	if n := mappedHuge(t, path, data); n < 14<<20 {
		t.Errorf("%d bytes of the 16 MiB tensor mapped 2 MiB at a time, want 14 MiB", n)
	}
}
