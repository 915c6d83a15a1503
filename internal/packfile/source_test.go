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
	srcs, err := Describe([]Input{{Path: path}})
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

// TestKeySamplesTensorStarts: a change that lies between two of the
// stride's pages is caught when it is in the first page of a tensor the
// pack is made from (Input.Starts), and a key of a file written before
// tensors were sampled is stale for this version (rebuilt once).
func TestKeySamplesTensorStarts(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	mtime := time.Unix(1, 0)
	writeWeights(t, p, data, mtime)
	start := int64(2<<20 + 300<<10) // between the stride's pages at 2 and 3 MiB
	in := []Input{{Path: p, Starts: []int64{start, 1 << 10, int64(len(data)) + 5}}}
	before, err := Describe(in)
	if err != nil {
		t.Fatal(err)
	}
	if before[0].TensorPages != 3 {
		t.Fatalf("TensorPages %d, want 3 (every start given counts, sampled or not)", before[0].TensorPages)
	}
	key := Key{Layout: "test v1", Sources: before}
	pack := filepath.Join(dir, ".streamguard", "pack")
	build(t, pack, key, testUnits())

	changed := append([]byte(nil), data...)
	changed[start+100] ^= 0xff
	writeWeights(t, p, changed, mtime)
	after, err := Describe(in)
	if err != nil {
		t.Fatal(err)
	}
	checkStale(t, pack, key, after[0], "contents changed")

	// The stride's pages alone miss the change: without the starts the
	// sample is the same as before it.
	writeWeights(t, p, data, mtime)
	old := describeOne(t, p)
	writeWeights(t, p, changed, mtime)
	if describeOne(t, p).Sample != old.Sample {
		t.Fatal("setup: the change meets one of the stride's pages")
	}
	// A pack written before tensors were sampled is stale, once.
	oldKey := Key{Layout: key.Layout, Sources: []Source{old}}
	build(t, pack, oldKey, testUnits())
	checkStale(t, pack, oldKey, before[0], "older version")
}

// TestKeyOfFileReplacedSinceOpenRefused: the key describes the file the
// load has open (Input.Opened). A file renamed over the path since, or a
// path whose symbolic link now names another file, has no key: the pack
// would hold the open file's weights under the new file's key.
func TestKeyOfFileReplacedSinceOpenRefused(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	writeWeights(t, p, []byte("old weights"), time.Unix(1, 0))
	opened, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Describe([]Input{{Path: p, Opened: opened}}); err != nil {
		t.Fatalf("the file still at its path: %v", err)
	}
	// Another inode, same bytes, size and time.
	tmp := filepath.Join(dir, "tmp")
	writeWeights(t, tmp, []byte("old weights"), time.Unix(1, 0))
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if _, err := Describe([]Input{{Path: p, Opened: opened}}); !errors.Is(err, errReplaced) {
		t.Fatalf("a file replaced since it was opened: %v, want errReplaced", err)
	}

	// A hub cache's link, flipped to another blob.
	blobs := filepath.Join(dir, "blobs")
	if err := os.Mkdir(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"aaaa", "bbbb"} {
		writeWeights(t, filepath.Join(blobs, b), []byte("weights "+b), time.Unix(1, 0))
	}
	link := filepath.Join(dir, "linked.safetensors")
	if err := os.Symlink(filepath.Join(blobs, "aaaa"), link); err != nil {
		t.Fatal(err)
	}
	opened, err = os.Stat(link)
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := Describe([]Input{{Path: link, Opened: opened}})
	if err != nil || srcs[0].Link != "aaaa" {
		t.Fatalf("the link as opened: %+v, %v", srcs, err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(blobs, "bbbb"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := Describe([]Input{{Path: link, Opened: opened}}); !errors.Is(err, errReplaced) {
		t.Fatalf("a link that names another blob since it was opened: %v, want errReplaced", err)
	}
}
