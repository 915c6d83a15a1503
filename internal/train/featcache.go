package train

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/streamguard/streamguard/internal/ownercheck"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// The feature cache is one safetensors file per (backbone, data) key,
// holding the F32 tensor "features" [rows, hidden] and the key in its
// metadata: the format streamguard already reads and checks strictly.
const (
	cacheTensor  = "features"
	cacheKeyMeta = "streamguard_features_key"
)

// cachePath is the file of key under dir.
func cachePath(dir, key string) string { return filepath.Join(dir, "features-"+key+".safetensors") }

// loadCache returns the cached features of key, or nil when there is no
// usable entry. A file that exists but does not hold what its name
// promises is reported in stale (it will be overwritten).
//
// The features decide the heads trained on them, so a file or a folder
// another user could have written (a --cache-dir under /tmp) is an error,
// not a stale entry, whether or not the file exists yet: its features may
// be planted, and one stored there could be replaced. The rule is
// packfile's (ownercheck); a trusted folder also means that the file
// checked is the one opened.
func loadCache(dir, key string, rows, hidden int) (feats []float32, stale error, err error) {
	path := cachePath(dir, key)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := ownercheck.Folder(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("feature cache: %w", err)
		}
		return nil, nil, nil
	case err == nil:
		if err := ownercheck.File(path, fi); err != nil {
			return nil, nil, fmt.Errorf("feature cache: %w", err)
		}
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err, nil
	}
	defer f.Close()
	if got := f.Metadata()[cacheKeyMeta]; got != key {
		return nil, fmt.Errorf("%s: key %q in its metadata, want %q", path, got, key), nil
	}
	t, err := f.Tensor(cacheTensor)
	if err != nil {
		return nil, err, nil
	}
	if t.DType != safetensors.F32 || !slices.Equal(t.Shape, []int{rows, hidden}) {
		return nil, fmt.Errorf("%s: features are %s %v, want F32 [%d %d]", path, t.DType, t.Shape, rows, hidden), nil
	}
	v, err := t.F32()
	if err != nil {
		return nil, err, nil
	}
	return slices.Clone(v), nil, nil
}

// storeCache writes feats under key, atomically: a reader sees the old
// entry, no entry, or the complete new one.
func storeCache(dir, key string, feats []float32, rows, hidden int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// An entry stored where another user can write would be refused by
	// loadCache, or replaced before it is read.
	if err := ownercheck.Folder(dir); err != nil {
		return fmt.Errorf("feature cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".features-*.tmp")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpPath) // after a successful rename there is nothing left
	w, err := safetensors.Create(tmpPath, map[string]string{cacheKeyMeta: key, "generator": "streamguard train-heads"},
		[]safetensors.TensorSpec{{Name: cacheTensor, DType: safetensors.F32, Shape: []int{rows, hidden}}})
	if err != nil {
		return err
	}
	werr := w.Begin(cacheTensor)
	buf := make([]byte, 0, 1<<20)
	for i := 0; werr == nil && i < len(feats); {
		buf = buf[:0]
		for ; i < len(feats) && len(buf) < cap(buf); i++ {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(feats[i]))
		}
		_, werr = w.Write(buf)
	}
	if err := w.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	return os.Rename(tmpPath, cachePath(dir, key))
}
