package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// cachedSnapshot returns ref's snapshot from the cache alone, if it holds
// a complete model folder.
func (c *Client) cachedSnapshot(ref Ref) (*Snapshot, error) {
	cache := c.Cache()
	commit, err := cache.Commit(ref)
	if err == nil {
		dir := cache.SnapshotDir(ref.Repo, commit)
		if err = checkModelFolder(dir); err == nil {
			return &Snapshot{Ref: ref, Commit: commit, Dir: dir, FromCache: true}, nil
		}
	}
	if !c.Offline {
		return nil, err
	}
	return nil, fmt.Errorf("%s is not in the hub cache %s (%w) and %w: run `streamguard pull %s` where the hub can be reached (or copy the cache), pass a model folder, or without the hub write a synthetic one with `streamguard gen-model --out DIR`",
		ref, c.CacheDir, err, ErrOffline, ref)
}

// Cached returns ref's snapshot from the cache alone, never the network:
// what a library loading a model by its hub id may do without surprising
// its caller with a multi-gigabyte download.
func (c *Client) Cached(ref Ref) (*Snapshot, error) {
	s, err := c.cachedSnapshot(ref)
	if err == nil || c.Offline {
		return s, err
	}
	return nil, fmt.Errorf("%s is not in the hub cache %s (%w): download it with `streamguard pull %s`, or pass a model folder",
		ref, c.CacheDir, err, ref)
}

// Resolve returns a model folder for ref: the cached snapshot when the
// cache holds a complete one (no network: a branch is not checked for new
// commits; `streamguard pull` updates it), else, unless offline, a pull
// with its progress bar on progress.
func (c *Client) Resolve(ctx context.Context, ref Ref, progress io.Writer) (*Snapshot, error) {
	if s, err := c.cachedSnapshot(ref); err == nil || c.Offline {
		return s, err
	}
	return c.Pull(ctx, ref, PullOptions{Progress: progress})
}

// checkModelFolder reports what a snapshot lacks to be loaded as a model:
// config.json and the weights (model.safetensors, or the index and every
// shard it lists). An interrupted pull links nothing, but a snapshot that
// another tool filled file by file may be partial.
func checkModelFolder(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		return fmt.Errorf("%s: no config.json: %w", dir, ErrNotCached)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		return nil
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	b, err := safetensors.ReadIndex(index) // bounded before it is read
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: no model.safetensors or model.safetensors.index.json: %w", dir, ErrNotCached)
	}
	if err != nil {
		return err
	}
	shards, err := indexShards(b)
	if err != nil {
		return fmt.Errorf("%s: %w", index, err)
	}
	var missing []string
	for _, s := range shards {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(s))); err != nil {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: missing shards %v: %w", dir, missing, ErrNotCached)
	}
	return nil
}

// indexShards reads a model.safetensors.index.json: the shard files its
// weight_map names, each once, sorted. A name that is not a safe file name
// of the snapshot (checkFileName) is refused: the index may come from
// anyone.
func indexShards(b []byte) ([]string, error) {
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, err
	}
	// In name order, so that an index with several bad names is refused
	// for the same one every time (a map's order changes from run to run).
	shards := slices.Sorted(maps.Values(idx.WeightMap))
	shards = slices.Compact(shards)
	for _, s := range shards {
		if checkFileName(s) != nil {
			return nil, fmt.Errorf("bad shard name %q", s)
		}
	}
	return shards, nil
}
