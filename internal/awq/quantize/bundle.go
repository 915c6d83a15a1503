package quantize

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// maxShardBytes is the most tensor data one output file holds; larger
// bundles are split into model-0000i-of-0000n.safetensors with an index,
// as Hugging Face tools write them.
const maxShardBytes = 4 << 30

// bundleWriter streams tensors into one or more safetensors files, in the
// order they were declared, so a model can be written layer by layer as it
// is quantized without holding it in memory.
type bundleWriter struct {
	dir   string
	meta  map[string]string
	specs []safetensors.TensorSpec
	shard []int
	files []string
	byShr [][]safetensors.TensorSpec
	total int64

	next    int // index of the tensor to write next
	cur     int // open shard, -1 before the first
	w       *safetensors.Writer
	created []string // files opened so far
}

func specBytes(s safetensors.TensorSpec) int64 {
	n := int64(s.DType.Size())
	for _, d := range s.Shape {
		n *= int64(d)
	}
	return n
}

func newBundleWriter(dir string, specs []safetensors.TensorSpec, meta map[string]string, maxShard int64) *bundleWriter {
	b := &bundleWriter{dir: dir, meta: meta, specs: specs, shard: make([]int, len(specs)), cur: -1}
	var size int64
	n := 0
	for i, s := range specs {
		sz := specBytes(s)
		if size > 0 && size+sz > maxShard {
			n++
			size = 0
		}
		b.shard[i] = n
		size += sz
		b.total += sz
	}
	shards := n + 1
	b.byShr = make([][]safetensors.TensorSpec, shards)
	for i, s := range specs {
		b.byShr[b.shard[i]] = append(b.byShr[b.shard[i]], s)
	}
	if shards == 1 {
		b.files = []string{safetensors.SingleFile}
	} else {
		for i := range shards {
			b.files = append(b.files, fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, shards))
		}
	}
	return b
}

// begin starts the next tensor, which must be name.
func (b *bundleWriter) begin(name string) error {
	if b.next >= len(b.specs) {
		return fmt.Errorf("bundle: tensor %s written after the last declared one", name)
	}
	if want := b.specs[b.next].Name; want != name {
		return fmt.Errorf("bundle: tensor %s written where %s was declared", name, want)
	}
	if s := b.shard[b.next]; s != b.cur {
		if err := b.closeShard(); err != nil {
			return err
		}
		path := filepath.Join(b.dir, b.files[s])
		w, err := safetensors.Create(path, b.meta, b.byShr[s])
		if err != nil {
			return err
		}
		b.w, b.cur = w, s
		b.created = append(b.created, path)
	}
	b.next++
	return b.w.Begin(name)
}

// Write appends bytes to the current tensor.
func (b *bundleWriter) Write(p []byte) (int, error) {
	if b.w == nil {
		return 0, errors.New("bundle: write before begin")
	}
	return b.w.Write(p)
}

// tensor writes one whole tensor.
func (b *bundleWriter) tensor(name string, data []byte) error {
	if err := b.begin(name); err != nil {
		return err
	}
	_, err := b.Write(data)
	return err
}

func (b *bundleWriter) closeShard() error {
	if b.w == nil {
		return nil
	}
	err := b.w.Close()
	b.w = nil
	return err
}

// close finishes the last file and writes the index of a sharded bundle.
func (b *bundleWriter) close() error {
	if err := b.closeShard(); err != nil {
		return err
	}
	if b.next != len(b.specs) {
		return fmt.Errorf("bundle: %d of %d tensors written", b.next, len(b.specs))
	}
	if len(b.files) == 1 {
		return nil
	}
	wm := make(map[string]string, len(b.specs))
	for i, s := range b.specs {
		wm[s.Name] = b.files[b.shard[i]]
	}
	return safetensors.WriteIndex(b.dir, wm, b.total, nil)
}

// abort closes what is open after a failure and removes the partial
// files, so the folder can be written again.
func (b *bundleWriter) abort() {
	_ = b.closeShard()
	for _, p := range b.created {
		_ = os.Remove(p)
	}
}

// prepareOutDir creates dir and refuses one that already holds a
// checkpoint, so stale shards cannot mix with new ones, or that is the
// source folder itself.
func prepareOutDir(dir string, sources ...string) error {
	if dir == "" {
		return errors.New("no output folder given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, s := range sources {
		if sa, err := filepath.Abs(s); err == nil && sa == abs {
			return fmt.Errorf("output folder %s is the input folder; choose another", dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".safetensors") || e.Name() == safetensors.IndexFile {
			return fmt.Errorf("%s already holds a checkpoint (%s); remove it or choose another folder", dir, e.Name())
		}
	}
	return nil
}

// sideFiles are copied next to the weights when the input has them.
var sideFiles = []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json",
	"vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"}

// copySideFiles copies the tokenizer and generation files from the first
// folder in dirs that has each.
func copySideFiles(out string, dirs ...string) ([]string, error) {
	return copyFirst(out, sideFiles, dirs)
}

// copyFirst copies each of names into out from the first folder in dirs
// that has it, and returns those it copied.
func copyFirst(out string, names, dirs []string) ([]string, error) {
	var copied []string
	for _, name := range names {
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, name))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
				return nil, err
			}
			copied = append(copied, name)
			break
		}
	}
	return copied, nil
}

// copyRemoteCode copies the Python modules that cfg's auto_map names (the
// custom classes transformers loads with trust_remote_code, such as
// modeling_qwen3_guard.py) from the first folder in dirs that has each:
// without them the written config names code its folder lacks. A
// reference to another repository ("repo--module.Class") or a module name
// that is not a plain file name is left alone.
func copyRemoteCode(out string, cfg *config.Config, dirs ...string) ([]string, error) {
	raw, ok := cfg.Extra["auto_map"]
	if !ok {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("config.json: auto_map: %w", err)
	}
	var refs []string
	for _, v := range m {
		switch v := v.(type) {
		case string:
			refs = append(refs, v)
		case []any: // AutoTokenizer: [slow class, fast class], either may be null
			for _, e := range v {
				if s, ok := e.(string); ok {
					refs = append(refs, s)
				}
			}
		}
	}
	var files []string
	for _, ref := range refs {
		mod, _, ok := strings.Cut(ref, ".")
		if !ok || strings.Contains(ref, "--") || !filepath.IsLocal(mod) || strings.ContainsAny(mod, `/\`) {
			continue
		}
		files = append(files, mod+".py")
	}
	slices.Sort(files)
	return copyFirst(out, slices.Compact(files), dirs)
}
