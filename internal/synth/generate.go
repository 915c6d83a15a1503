// Package synth writes synthetic Qwen3Guard-Stream model folders: the exact
// tensor names and shapes of a real checkpoint (or of the broken INT4 export
// with --noesis) filled with deterministic pseudo-random weights, the config
// and the real Qwen3 tokenizer files. Every test and benchmark uses these,
// since no real weights can be downloaded.
package synth

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// DTypes are the --dtype values.
var DTypes = []string{"f32", "bf16", "f16", "awq"}

// Options select what Generate writes.
type Options struct {
	Preset string // a config preset name
	// Config, when not nil, is the shape to generate instead of Preset's
	// (for tests that need one no preset has); it is copied, not changed.
	Config *config.Config
	DType  string // f32, bf16, f16 or awq (AWQ GEMM INT4 backbone, fp16 rest)
	Seed   uint64
	// OutlierChannels is the number of hidden channels scaled by OutlierFactor.
	OutlierChannels int
	// Noesis writes a replica of the broken public INT4 export: a
	// Qwen3ForCausalLM config without guard fields, an AWQ backbone, no
	// guard heads and a freshly initialised lm_head. It implies DType awq.
	Noesis bool
	// Group is the AWQ group size; 0 picks 128, or the largest power of two
	// below it that divides every quantized in_features (64 for tiny).
	Group int
	// Shards is the number of safetensors files; 0 uses the layout of the
	// real repositories (2 for the 4B preset, 4 for 8B, else 1).
	Shards int
	// Layers cuts the preset's layer count (0 keeps it): a model of the
	// real shapes that tests can run quickly.
	Layers int
	// Workers fill chunks in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, when not nil, is called from the writing goroutine after
	// each chunk with the tensor bytes written so far and the total.
	Progress func(done, total int64)
	// Force removes the checkpoint files (*.safetensors and the shard
	// index) a dir already holds instead of refusing it; other files are
	// left alone or overwritten.
	Force bool
}

// Result describes a written folder.
type Result struct {
	Dir             string
	Config          *config.Config
	DType           string   // the --dtype written (bf16 when none was given)
	Files           []string // safetensors files, in order
	Tensors         int
	Bytes           int64 // tensor bytes
	Group           int   // AWQ group size, 0 for float folders
	OutlierChannels []int
}

// Generator is the value of the "generator" metadata key.
const Generator = "streamguard gen-model"

// DefaultShards is the number of files the real repositories use.
func DefaultShards(preset string) int {
	switch preset {
	case "qwen3guard-stream-4b":
		return 2
	case "qwen3guard-stream-8b":
		return 4
	}
	return 1
}

// Generate writes a complete model folder to dir, creating it if needed.
// It refuses a dir that already holds a checkpoint, so stale shards cannot
// mix with new ones, unless o.Force removes that checkpoint first. Memory use is bounded by a few chunks per worker
// whatever the model size.
func Generate(dir string, o Options) (*Result, error) {
	if o.Noesis {
		if o.DType == "" {
			o.DType = "awq"
		}
		if o.DType != "awq" {
			return nil, fmt.Errorf("--noesis replicates an AWQ INT4 bundle; dtype %q is not possible", o.DType)
		}
	}
	if o.DType == "" {
		o.DType = "bf16"
	}
	if !slices.Contains(DTypes, o.DType) {
		return nil, fmt.Errorf("unknown dtype %q (want one of %s)", o.DType, strings.Join(DTypes, ", "))
	}
	cfg, group, err := buildConfig(o)
	if err != nil {
		return nil, err
	}
	if o.OutlierChannels < 0 || o.OutlierChannels > cfg.HiddenSize {
		return nil, fmt.Errorf("--outlier-channels %d out of range 0..%d (hidden_size)", o.OutlierChannels, cfg.HiddenSize)
	}
	channels := outlierChannels(o.Seed, cfg.HiddenSize, o.OutlierChannels)
	var boost []bool
	if len(channels) > 0 {
		boost = make([]bool, cfg.HiddenSize)
		for _, c := range channels {
			boost[c] = true
		}
	}
	plans, err := plan(cfg, o, group, boost)
	if err != nil {
		return nil, err
	}
	shards := o.Shards
	if shards == 0 {
		shards = DefaultShards(o.Preset)
	}
	if shards < 1 || shards > len(plans) {
		return nil, fmt.Errorf("%d shards for %d tensors", shards, len(plans))
	}
	total := assignShards(plans, shards)

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := refuseExisting(dir, o.Force); err != nil {
		return nil, err
	}
	if err := cfg.Write(dir); err != nil {
		return nil, err
	}
	tok, err := qwen3Files()
	if err != nil {
		return nil, err
	}
	tokJSON, tokCfg := tok[0], tok[1]
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tokJSON, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tokCfg, 0o644); err != nil {
		return nil, err
	}
	if err := writeGenerationConfig(dir); err != nil {
		return nil, err
	}

	meta := map[string]string{"format": "pt", "generator": Generator, "preset": o.Preset,
		"seed": strconv.FormatUint(o.Seed, 10), "dtype": o.DType}
	if len(channels) > 0 {
		meta["outlier_channels"] = joinInts(channels)
	}
	if o.Noesis {
		meta["variant"] = "noesis"
	}
	files := shardNames(shards)
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var progress func(int64)
	if o.Progress != nil {
		progress = func(done int64) { o.Progress(done, total) }
	}
	if err := writeShards(dir, files, plans, meta, workers, progress); err != nil {
		return nil, err
	}
	if shards > 1 {
		wm := make(map[string]string, len(plans))
		for _, p := range plans {
			wm[p.spec.Name] = files[p.shard]
		}
		if err := safetensors.WriteIndex(dir, wm, total, nil); err != nil {
			return nil, err
		}
	}
	res := &Result{Dir: dir, Config: cfg, DType: o.DType, Tensors: len(plans), Bytes: total, OutlierChannels: channels}
	if o.DType == "awq" {
		res.Group = group
	}
	for _, f := range files {
		res.Files = append(res.Files, filepath.Join(dir, f))
	}
	return res, nil
}

// buildConfig derives config.json from the preset and the options, and
// the AWQ group size.
func buildConfig(o Options) (*config.Config, int, error) {
	var cfg *config.Config
	if o.Config != nil {
		c := *o.Config
		cfg = &c
	} else {
		var err error
		if cfg, err = config.Preset(o.Preset); err != nil {
			return nil, 0, err
		}
	}
	if o.Layers < 0 || o.Layers > cfg.NumHiddenLayers {
		return nil, 0, fmt.Errorf("%d layers: the preset has %d", o.Layers, cfg.NumHiddenLayers)
	}
	if o.Layers > 0 {
		cfg.NumHiddenLayers = o.Layers
	}
	cfg.TorchDtype = map[string]string{"f32": "float32", "bf16": "bfloat16", "f16": "float16", "awq": "float16"}[o.DType]
	if o.Noesis {
		// What the broken export's config looks like: a causal LM, no guard
		// fields, untied output layer.
		cfg.Architectures = []string{"Qwen3ForCausalLM"}
		cfg.GuardInnerSize, cfg.NumRiskLevel, cfg.NumCategory, cfg.NumQueryRiskLevel, cfg.NumQueryCategory = 0, 0, 0, 0, 0
		cfg.ResponseRiskLevelMap, cfg.ResponseCategoryMap, cfg.QueryRiskLevelMap, cfg.QueryCategoryMap = nil, nil, nil, nil
		cfg.TieWordEmbeddings = false
	}
	if o.DType != "awq" {
		return cfg, 0, nil
	}
	group := o.Group
	if group == 0 {
		group = 128
		for group > 8 && !divides(cfg, group) {
			group /= 2
		}
	}
	if group <= 0 || group%8 != 0 {
		return nil, 0, fmt.Errorf("AWQ group size %d must be a positive multiple of 8", group)
	}
	zp := true
	q := &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: group, ZeroPoint: &zp, Version: "gemm"}
	if !o.Noesis {
		q.ModulesToNotConvert = checkpoint.HeadModules()
	}
	cfg.QuantizationConfig = q
	if probs := checkpoint.AWQShapeProblems(cfg); len(probs) > 0 {
		return nil, 0, fmt.Errorf("%s", strings.Join(probs, "; "))
	}
	return cfg, group, nil
}

// divides reports whether group divides every in_features of cfg's layers.
func divides(cfg *config.Config, group int) bool {
	for _, k := range []int{cfg.HiddenSize, cfg.NumAttentionHeads * cfg.HeadDim, cfg.IntermediateSize} {
		if k%group != 0 {
			return false
		}
	}
	return true
}

// plan lists the tensors to write in checkpoint order with their fills.
func plan(cfg *config.Config, o Options, group int, boost []bool) ([]*tensorPlan, error) {
	exps := checkpoint.Expected(cfg)
	if exps == nil {
		return nil, fmt.Errorf("preset %s has unusable sizes", o.Preset)
	}
	plainDType := map[string]safetensors.DType{"f32": safetensors.F32, "bf16": safetensors.BF16, "f16": safetensors.F16, "awq": safetensors.F16}[o.DType]
	var plans []*tensorPlan
	for _, e := range exps {
		if e.Optional || (o.Noesis && slices.Contains(checkpoint.HeadNames, e.Name)) {
			continue
		}
		dt := plainDType
		if e.Quant == checkpoint.AWQ {
			dt = e.DTypes[0]
		}
		f, err := fillFor(e, dt, o.Seed, group, boost)
		if err != nil {
			return nil, err
		}
		plans = append(plans, newPlan(e.Name, dt, e.Shape, f))
	}
	if o.Noesis {
		plans = append(plans, newPlan("lm_head.weight", safetensors.F16, []int{cfg.VocabSize, cfg.HiddenSize}, lmHeadFill(o.Seed)))
	}
	return plans, nil
}

func newPlan(name string, dt safetensors.DType, shape []int, f filler) *tensorPlan {
	n := int64(dt.Size())
	for _, d := range shape {
		n *= int64(d)
	}
	return &tensorPlan{spec: safetensors.TensorSpec{Name: name, DType: dt, Shape: shape}, bytes: n, fill: f}
}

// assignShards splits the tensors, in order, into n files of roughly equal
// size, none empty; it returns the total byte size.
func assignShards(plans []*tensorPlan, n int) int64 {
	var total int64
	for _, p := range plans {
		total += p.bytes
	}
	var cum int64
	shard := 0
	for i, p := range plans {
		// Move on when this shard has its share, keeping one tensor for
		// each remaining shard.
		if shard < n-1 && cum >= total*int64(shard+1)/int64(n) {
			shard++
		}
		if left := len(plans) - i; shard < n-left {
			shard = n - left
		}
		p.shard = shard
		cum += p.bytes
	}
	return total
}

func shardNames(n int) []string {
	if n == 1 {
		return []string{safetensors.SingleFile}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
	}
	return names
}

// refuseExisting stops gen-model from writing into a folder that already
// holds a checkpoint, or with force removes that checkpoint's files.
func refuseExisting(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".safetensors") && e.Name() != safetensors.IndexFile {
			continue
		}
		if !force {
			return fmt.Errorf("%s already holds a checkpoint (%s); remove it, choose another folder, or pass --force to overwrite it", dir, e.Name())
		}
		if e.IsDir() {
			return fmt.Errorf("%s: %s is a folder, not a checkpoint file; not removing it", dir, e.Name())
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// qwen3Files decompresses the embedded tokenizer files once per process;
// the slices are only ever written out, never modified.
var qwen3Files = sync.OnceValues(func() ([2][]byte, error) {
	j, c, err := tokenizer.Qwen3Files()
	return [2][]byte{j, c}, err
})

func writeGenerationConfig(dir string) error {
	const gen = `{
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "pad_token_id": 151643
}
`
	return os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(gen), 0o644)
}

// outlierChannels picks k distinct hidden channels from the seed (a partial
// Fisher-Yates shuffle), sorted.
func outlierChannels(seed uint64, hidden, k int) []int {
	if k <= 0 {
		return nil
	}
	perm := make([]int, hidden)
	for i := range perm {
		perm[i] = i
	}
	key := streamKey(seed, "outlier-channels")
	for i := 0; i < k; i++ {
		j := i + int(draw(key, uint64(i))%uint64(hidden-i))
		perm[i], perm[j] = perm[j], perm[i]
	}
	ch := slices.Clone(perm[:k])
	slices.Sort(ch)
	return ch
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
