package hub

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/hub/hubtest"
	"github.com/streamguard/streamguard/internal/mmap"
)

// TestDownloadHugeFolios: a downloaded weights file is written in whole
// 4 MiB pieces (package folio), so the page cache keeps it in 2 MiB folios
// and a model mapping it maps it 2 MiB at a time — where the kernel and the
// filesystem of the test's cache folder keep such folios at all. Written as
// each read of the response returned, it was cached in small folios.
func TestDownloadHugeFolios(t *testing.T) {
	h := hubtest.New(t)
	weights := bytes.Repeat([]byte("weights of 16 B."), 1<<20)
	h.AddRepo(testRepo, map[string]hubtest.File{"model.safetensors": {Data: weights, LFS: true}})
	c := newTestClient(t, h)
	if err := os.MkdirAll(c.CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, err := mmap.HugeFoliosIn(c.CacheDir); err != nil || !ok {
		t.Skipf("the page cache keeps no file of %s in 2 MiB folios (%v): nothing to check", c.CacheDir, err)
	}
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(s.Dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := mmap.Map(f, len(weights))
	if err != nil {
		t.Fatal(err)
	}
	defer mmap.Unmap(b)
	if !bytes.Equal(b, weights) {
		t.Fatal("downloaded bytes differ")
	}
	n, err := mmap.HugeMapped(b)
	if err != nil {
		t.Skipf("cannot see how the file is mapped: %v", err)
	}
	if n < 14<<20 {
		t.Errorf("%d of the 16 MiB downloaded mapped 2 MiB at a time, want at least 14 MiB", n)
	}
}
