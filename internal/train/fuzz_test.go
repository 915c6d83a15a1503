package train

import (
	"encoding/binary"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// FuzzParsePaths: ParsePaths accepts a list of distinct known paths, each
// once, and its result, joined again, parses to itself.
func FuzzParsePaths(f *testing.F) {
	for _, s := range []string{"query", "response", "query,response", " response , query ", "query,query", "", ",", "Query", "query,\x1b[2J"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePaths(s)
		if err != nil {
			return
		}
		if len(ps) == 0 || len(ps) > len(Paths) {
			t.Fatalf("ParsePaths(%q) = %v", s, ps)
		}
		var names []string
		for i, p := range ps {
			if !slices.Contains(Paths, p) || slices.Contains(ps[:i], p) {
				t.Fatalf("ParsePaths(%q) = %v: unknown or repeated %q", s, ps, p)
			}
			names = append(names, string(p))
		}
		if again, err := ParsePaths(strings.Join(names, ",")); err != nil || !slices.Equal(again, ps) {
			t.Fatalf("ParsePaths(%q) = %v, which parses again to %v, %v", s, ps, again, err)
		}
	})
}

// FuzzLoadCache puts arbitrary bytes where the features of a key belong
// (a file this user owns, in a folder only it may write) and loads them.
// loadCache must not panic or fail: a damaged entry is stale, never an
// error. Features it returns are exactly the F32 [rows, hidden] tensor
// "features" of a file whose metadata names the key, bit for bit.
func FuzzLoadCache(f *testing.F) {
	const key = "0123456789abcdef0123456789abcdef01234567"
	seedDir := f.TempDir()
	if err := storeCache(seedDir, key, []float32{1, -2, float32(math.Inf(1)), 4, 5, 6}, 2, 3); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(cachePath(seedDir, key))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, uint8(2), uint8(3))
	f.Add(good, uint8(3), uint8(2))
	f.Add(good, uint8(1), uint8(6))
	f.Add(good[:len(good)-1], uint8(2), uint8(3))
	f.Add([]byte{}, uint8(2), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, rows, hidden uint8) {
		dir := t.TempDir()
		if err := os.WriteFile(cachePath(dir, key), b, 0o600); err != nil {
			t.Fatal(err)
		}
		feats, stale, err := loadCache(dir, key, int(rows), int(hidden))
		if err != nil {
			t.Fatalf("loadCache of this user's file: %v", err)
		}
		if feats == nil {
			if stale == nil && int(rows)*int(hidden) > 0 {
				t.Fatal("no features and no reason")
			}
			return
		}
		if stale != nil {
			t.Fatalf("features and a stale reason %v", stale)
		}
		sf, err := safetensors.Open(cachePath(dir, key))
		if err != nil {
			t.Fatalf("loadCache used a file safetensors refuses: %v", err)
		}
		defer sf.Close()
		tn, err := sf.Tensor(cacheTensor)
		if err != nil || sf.Metadata()[cacheKeyMeta] != key || tn.DType != safetensors.F32 || !slices.Equal(tn.Shape, []int{int(rows), int(hidden)}) {
			t.Fatalf("loadCache used %v (%v), metadata %v", tn, err, sf.Metadata())
		}
		if len(feats) != int(rows)*int(hidden) {
			t.Fatalf("%d features for [%d %d]", len(feats), rows, hidden)
		}
		for i, v := range feats {
			if math.Float32bits(v) != binary.LittleEndian.Uint32(tn.Data[4*i:]) {
				t.Fatalf("feature %d is %v, the file holds %#x", i, v, binary.LittleEndian.Uint32(tn.Data[4*i:]))
			}
		}
	})
}
