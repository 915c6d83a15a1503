package qwen3

import (
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// OpenFolder loads the checkpoint folder dir (config.json and its
// safetensors files, memory-mapped) with opts; an AWQ config gets the AWQ
// loader unless opts names a Linear loader. The returned set backs the
// model's weights: close it after the model is done.
func OpenFolder(dir string, opts Options) (*Model, *safetensors.Set, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, nil, err
	}
	if opts.Linear == nil && cfg.IsAWQ() {
		opts.Linear = NewAWQLoader(set, cfg.QuantizationConfig)
	}
	m, err := Load(set, cfg, opts)
	if err != nil {
		set.Close()
		return nil, nil, err
	}
	return m, set, nil
}
