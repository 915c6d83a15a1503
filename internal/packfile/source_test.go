package packfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeWeights writes data to path and sets its times back to mtime, as
// cp -p, rsync -a and tar do.
func writeWeights(t *testing.T, path string, data []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// describeOne is Describe of one file.
func describeOne(t *testing.T, path string) Source {
	t.Helper()
	srcs, err := Describe([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	return srcs[0]
}

// TestKeyCatchesRewriteWithTimesKept: weights rewritten with other bytes
// of the same size and the modification time set back (cp -p, rsync -a,
// an image build's fixed timestamps): a change spanning a MiB anywhere
// after the header, as a changed tensor does, changes a sampled page, so
// a pack of the old weights is stale, not mapped — in place or replaced.
func TestKeyCatchesRewriteWithTimesKept(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	// 40 MiB: 16 pages spread over it (as the key once sampled) lie 2.6
	// MiB apart, and miss a MiB between them.
	data := make([]byte, 40<<20+12345) // the header MiB, then "weights"
	for i := range data {
		data[i] = byte(i * 7)
	}
	mtime := time.Unix(1, 0) // SOURCE_DATE_EPOCH-style
	writeWeights(t, p, data, mtime)
	before := describeOne(t, p)
	key := Key{Layout: "test v1", Sources: []Source{before}}
	pack := filepath.Join(dir, ".streamguard", "pack")
	build(t, pack, key, testUnits())

	for _, c := range []struct {
		name       string
		start, end int
	}{
		{"a MiB at an odd offset", 2<<20 + 8<<10, 3<<20 + 8<<10},
		{"the last bytes", len(data) - 100, len(data)},
		{"the header", 100, 200},
	} {
		changed := append([]byte(nil), data...)
		for i := c.start; i < c.end; i++ {
			changed[i] ^= 0xff
		}
		t.Run(c.name+" in place", func(t *testing.T) {
			writeWeights(t, p, changed, mtime)
			after := describeOne(t, p)
			if after.Size != before.Size || after.ModTime != before.ModTime {
				t.Fatalf("size and time not kept: before %+v, after %+v", before, after)
			}
			checkStale(t, pack, key, after, "contents changed")
		})
		t.Run(c.name+" replaced", func(t *testing.T) {
			tmp := filepath.Join(dir, ".model.safetensors.tmp")
			writeWeights(t, tmp, changed, mtime)
			if err := os.Rename(tmp, p); err != nil {
				t.Fatal(err)
			}
			checkStale(t, pack, key, describeOne(t, p), "contents changed")
		})
	}
	// The same bytes written anew (another inode, another status change
	// time: an image pulled onto another host) keep the key.
	writeWeights(t, p, data, mtime)
	if again := describeOne(t, p); again != before {
		t.Fatalf("the same bytes, times and size: key %+v, was %+v", again, before)
	}
}

// checkStale checks that the pack written under key is stale for a model
// whose source is now src, and why.
func checkStale(t *testing.T, pack string, key Key, src Source, why string) {
	t.Helper()
	want := Key{Layout: key.Layout, Sources: []Source{src}}
	f, err := Open(pack, want)
	if err == nil {
		f.Close()
		t.Fatalf("the pack of the old weights opens for the new ones (key %+v)", src)
	}
	var stale *StaleError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), why) {
		t.Fatalf("Open: %v, want a StaleError naming the %s", err, why)
	}
}

// TestKeyOfSparseSamplingIsStale: a pack written when the key sampled 16
// pages in all (its sources have no sample_stride) still parses, and is
// stale for this version, so the load rebuilds it once instead of
// refusing it or mapping it unchecked.
func TestKeyOfSparseSamplingIsStale(t *testing.T) {
	dir := t.TempDir()
	key, _ := testKey(t, dir)
	old := key
	old.Sources = []Source{key.Sources[0]}
	old.Sources[0].Stride = 0
	pack := filepath.Join(dir, "pack")
	build(t, pack, old, testUnits())
	if b, err := os.ReadFile(pack); err != nil || strings.Contains(string(b[:4096]), "sample_stride") {
		t.Fatalf("the old-format header names the new field (err %v)", err)
	}
	checkStale(t, pack, old, key.Sources[0], "older version")
	// Rebuilt under the current key, it maps.
	build(t, pack, key, testUnits())
	f, err := Open(pack, key)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}
