package qwen3

import (
	"errors"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/packfile"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Weights is what a model that OpenFolder loaded reads from: the
// checkpoint's mapped safetensors files and, for AWQ, the mapped
// repacked-weights file. Close it after the model is done.
type Weights struct {
	*safetensors.Set
	// Repack says how an AWQ load used Options.RepackCache.
	Repack RepackCache
	pack   *packfile.File
}

// PackMapping reports the repacked-weights file the model maps: its size
// and how many of its bytes are mapped 2 MiB at a time (see
// packfile.File.HugeMapped); ok is false without such a file, huge -1
// where the system does not say.
func (w *Weights) PackMapping() (size, huge int64, ok bool) {
	if w == nil || w.pack == nil {
		return 0, 0, false
	}
	huge, err := w.pack.HugeMapped()
	if err != nil {
		huge = -1
	}
	return w.pack.Size(), huge, true
}

// Close unmaps the weights.
func (w *Weights) Close() error {
	var err error
	if w.pack != nil {
		err = w.pack.Close()
	}
	return errors.Join(err, w.Set.Close())
}

// OpenFolder loads the checkpoint folder dir (config.json and its
// safetensors files, memory-mapped) with opts; an AWQ config gets the AWQ
// loader unless opts names a Linear loader, and with it the
// repacked-weights file of opts.RepackCache (none with opts.UploadOnly).
func OpenFolder(dir string, opts Options) (*Model, *Weights, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, nil, err
	}
	w := &Weights{Set: set}
	var pack *awqPack
	if opts.Linear == nil && cfg.IsAWQ() {
		q := cfg.QuantizationConfig
		if opts.UploadOnly {
			opts.Linear = awqSourceLoader(q.GroupSize, q.ModulesToNotConvert)
		} else {
			pack = openAWQPack(set, q.GroupSize, q.ModulesToNotConvert, opts.RepackCache)
			opts.Linear = awqLoader(q.GroupSize, q.ModulesToNotConvert, pack.pre)
		}
	}
	m, err := Load(set, cfg, opts)
	if pack != nil {
		w.pack = pack.finish(err == nil)
		w.Repack = pack.use
	}
	if err != nil {
		w.Close()
		return nil, nil, err
	}
	if pack != nil {
		// Its projections are the repacked file's; of the checkpoint the
		// model reads only what it copied while loading (norms, heads) and
		// embedding rows, which it reads with pread. What the load mapped
		// of it — with the page cache in 2 MiB folios, whole folios around
		// each small tensor — is released rather than counted resident for
		// as long as the model runs (a tensor used in place, such as an
		// unquantized projection, is mapped again when read).
		set.ReleaseMappings()
	}
	return m, w, nil
}
