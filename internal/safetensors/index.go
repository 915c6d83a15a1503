package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// IndexFile is the name of a sharded folder's index.
const IndexFile = "model.safetensors.index.json"

// maxIndexSize bounds the index file; real ones are a few hundred KiB.
const maxIndexSize = 100 << 20

// index is the parsed model.safetensors.index.json.
type index struct {
	totalSize int64 // -1 when metadata.total_size is absent
	weightMap map[string]string
}

func errIndexSize(n int64) error {
	return &Error{Msg: fmt.Sprintf("index is %d bytes, over the %d-byte limit", n, maxIndexSize)}
}

// parseIndex parses an index without I/O. Duplicate tensor names and shard
// names that are not plain file names are errors.
func parseIndex(b []byte) (*index, error) {
	if len(b) > maxIndexSize {
		return nil, errIndexSize(int64(len(b)))
	}
	idx := &index{totalSize: -1}
	tk := newTokens(b, false)
	err := tk.object("index", func(key string) error {
		switch key {
		case "weight_map":
			idx.weightMap = map[string]string{}
			return tk.object("weight_map", func(name string) error {
				shard, err := tk.str(fmt.Sprintf("weight_map entry %q", truncate(name, 40)))
				if err != nil {
					return err
				}
				if !plainFileName(shard) {
					return &Error{Tensor: name, Msg: fmt.Sprintf("weight_map shard %q is not a file name in the model folder", truncate(shard, 80))}
				}
				idx.weightMap[name] = shard
				return nil
			})
		case "metadata":
			tok, err := tk.next()
			if err != nil || tok == nil {
				return err
			}
			if tok != json.Delim('{') {
				return fmt.Errorf("metadata must be an object, found %s", describe(tok))
			}
			return tk.members("metadata", func(k string) error {
				if k != "total_size" {
					return tk.skip()
				}
				v, err := tk.uint("metadata.total_size")
				idx.totalSize = v
				return err
			})
		default:
			return tk.skip()
		}
	})
	if err == nil {
		err = tk.end()
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, &Error{Msg: "invalid index", Err: err}
	}
	if idx.weightMap == nil {
		return nil, &Error{Msg: "index has no weight_map"}
	}
	if len(idx.weightMap) == 0 {
		return nil, &Error{Msg: "index weight_map is empty"}
	}
	return idx, nil
}

// plainFileName rejects separators, volume names, "." and "..", so an
// index can only point at files inside its own folder.
func plainFileName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`+"\x00") && filepath.VolumeName(s) == ""
}

// WriteIndex writes dir/model.safetensors.index.json in the layout other
// tools expect: {"metadata": {"total_size": N, ...}, "weight_map": {...}},
// keys sorted, two-space indent. totalSize is the sum of the tensors' byte
// sizes; metadata may add string entries but not total_size.
func WriteIndex(dir string, weightMap map[string]string, totalSize int64, metadata map[string]string) error {
	path := filepath.Join(dir, IndexFile)
	if totalSize < 0 {
		return &Error{File: path, Msg: fmt.Sprintf("negative total_size %d", totalSize)}
	}
	if len(weightMap) == 0 {
		return &Error{File: path, Msg: "empty weight_map"}
	}
	for _, name := range slices.Sorted(maps.Keys(weightMap)) {
		if shard := weightMap[name]; !plainFileName(shard) {
			return &Error{File: path, Tensor: name, Msg: fmt.Sprintf("shard %q is not a file name in the folder", shard)}
		}
	}
	meta := map[string]any{"total_size": totalSize}
	for k, v := range metadata {
		if k == "total_size" {
			return &Error{File: path, Msg: "metadata key total_size is reserved"}
		}
		meta[k] = v
	}
	b, err := json.MarshalIndent(struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{meta, weightMap}, "", "  ")
	if err != nil {
		return &Error{File: path, Msg: "encode index", Err: err}
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o666); err != nil {
		return &Error{File: path, Msg: "write index", Err: unwrapPath(err)}
	}
	return nil
}
