// Package quantize turns a Qwen3Guard-Stream checkpoint into an AutoAWQ
// GEMM INT4 bundle that keeps the 8 guard heads, measures how far the
// result is from its source, and repairs INT4 bundles whose export dropped
// the heads ([Graft]).
//
// The quantizer walks the model one decoder layer at a time from the
// memory-mapped source: it runs the layer over the calibration sequences
// (keeping only that layer's inputs), searches per-input AWQ scales and
// clipping thresholds (as AutoAWQ does), quantizes, writes the layer's tensors
// and lets the kernel drop the source pages before the next layer. Memory
// is one layer's weights in float32 plus the calibration activations,
// whatever the model size.
package quantize

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Method is the quantization algorithm.
type Method string

const (
	// AWQ is activation-aware scaling plus clipping search, then Q.
	AWQ Method = "awq"
	// RTN is plain round-to-nearest Q of the source weights (no
	// calibration), the baseline AWQ must beat.
	RTN Method = "rtn"
)

// Defaults of the calibration and search sizes, sized for CPUs: the
// calibration forward costs 0.4 GFLOP per token and layer of an 8B model
// and each search token 20 candidate forwards, so AutoAWQ's 128×512
// tokens would take days on two cores. 1024 statistics tokens and 128
// search tokens keep an 8B model within an hour there; --samples,
// --seqlen and --search-tokens trade time for a larger calibration.
const (
	DefaultSamples      = 4
	DefaultSeqLen       = 256
	DefaultSearchTokens = 128
	DefaultSeed         = 42
	DefaultGroup        = 128
	// maxEvalTokens bounds each held-out conversation.
	maxEvalTokens = 256
	// chunkTokens bounds the tokens run through a layer in one call, which
	// bounds the forward's scratch memory.
	chunkTokens = 2048
)

// Options configure Quantize.
type Options struct {
	Source string // model folder (BF16, F16 or F32 guard checkpoint)
	Out    string // output folder; created, must not hold a checkpoint
	Method Method // AWQ (default) or RTN
	// Group is the quantization group size along the inputs; 0 picks 128,
	// or the largest power of two below it that divides every in_features.
	Group int
	// Calibration is the calibration text; nil means DefaultCalibration.
	Calibration *Dataset
	// Samples sequences of SeqLen tokens are run through every layer for
	// the activation statistics; SearchTokens of them score the candidate
	// scales (whole sequences, or a prefix of the first one: attention is
	// causal, so a prefix's outputs are those of the full sequence).
	Samples, SeqLen, SearchTokens int
	Seed                          uint64 // shuffles the calibration documents
	SearchKernel                  SearchKernel
	// HeldOut is the text of the quality report; nil means DefaultHeldOut.
	HeldOut *Dataset
	// SkipEval leaves out the quality report (the strict reload still
	// runs).
	SkipEval bool
	// Layers, when positive and below num_hidden_layers, is a measurement
	// run: only that many layers are processed, nothing is written, and
	// the result estimates the time of the full run.
	Layers int
	// Version is the streamguard version recorded as provenance.
	Version string
	// Progress receives the progress bar and messages; nil discards them.
	Progress io.Writer
}

// Result describes a finished run.
type Result struct {
	Source       string       `json:"source"`
	Out          string       `json:"out,omitempty"`
	Method       Method       `json:"method"`
	Group        int          `json:"group_size"`
	SearchKernel SearchKernel `json:"search_kernel,omitempty"`
	Calibration  string       `json:"calibration,omitempty"`
	Samples      int          `json:"samples"`
	SeqLen       int          `json:"seq_len"`
	CalibTokens  int          `json:"calibration_tokens"`
	SearchTokens int          `json:"search_tokens"`
	Seed         uint64       `json:"seed"`
	Layers       int          `json:"layers"`
	TotalLayers  int          `json:"total_layers"`
	// Measured is set for a measurement run (Options.Layers): nothing was
	// written and EstimatedSeconds extrapolates the full quantization.
	Measured         bool                   `json:"measured,omitempty"`
	EstimatedSeconds float64                `json:"estimated_seconds,omitempty"`
	SetupSeconds     float64                `json:"setup_seconds"`
	EmbedSeconds     float64                `json:"embed_seconds"`
	QuantizeSeconds  float64                `json:"quantize_seconds"` // setup through the last tensor written
	VerifySeconds    float64                `json:"verify_seconds"`
	EvalSeconds      float64                `json:"eval_seconds"`
	Seconds          float64                `json:"seconds"`
	LayerStats       []LayerStats           `json:"layer_stats"`
	Files            []string               `json:"files,omitempty"`
	Bytes            int64                  `json:"bytes,omitempty"`
	Quality          *Quality               `json:"quality,omitempty"`
	Report           *checkpoint.LoadReport `json:"-"`
}

// LayerStats is the work on one decoder layer.
type LayerStats struct {
	Layer   int     `json:"layer"`
	Seconds float64 `json:"seconds"`
	// Phase times: forward (calibration and held-out), search (scales),
	// clip, pack (final quantization and encoding).
	Forward float64 `json:"forward_seconds"`
	Search  float64 `json:"search_seconds"`
	Clip    float64 `json:"clip_seconds"`
	Pack    float64 `json:"pack_seconds"`
	// Ratios are the chosen grid ratios per scaling group (attn, o, mlp,
	// down) and Loss their output mean squared error on the search tokens.
	Ratios map[string]float64 `json:"ratios,omitempty"`
	Loss   map[string]float64 `json:"loss,omitempty"`
}

// Quantize runs the quantizer; see the package documentation.
func Quantize(o Options) (res *Result, err error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	rep, err := checkpoint.Report(o.Source)
	if err != nil {
		return nil, err
	}
	if err := sourceOK(rep); err != nil {
		return nil, err
	}
	cfg := rep.Config
	group, err := chooseGroup(cfg, o.Group)
	if err != nil {
		return nil, err
	}
	measure := o.Layers > 0 && o.Layers < cfg.NumHiddenLayers
	if !measure && o.Out == "" {
		return nil, errors.New("no output folder given")
	}
	res = &Result{Source: o.Source, Out: o.Out, Method: o.Method, Group: group, Seed: o.Seed,
		TotalLayers: cfg.NumHiddenLayers, Layers: cfg.NumHiddenLayers, Measured: measure}
	if measure {
		res.Out, res.Layers = "", o.Layers
	}
	if o.Method == AWQ {
		res.SearchKernel = o.SearchKernel
		res.Calibration = o.Calibration.Source
	}

	set, err := safetensors.OpenDir(o.Source)
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			set.Close()
		}
	}()
	model, err := qwen3.Load(set, cfg, qwen3.Options{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Source, err)
	}
	tok, err := loadTokenizer(o.Source)
	if err != nil {
		return nil, err
	}
	r := &run{o: o, res: res, cfg: cfg, set: set, model: model, group: group, prog: newProgress(o.Progress, float64(res.Layers))}
	if o.Method == AWQ {
		s, err := BuildSamples(tok, o.Calibration, o.Samples, o.SeqLen, o.Seed)
		if err != nil {
			return nil, err
		}
		r.calib = s.Seqs
		res.Samples, res.SeqLen, res.CalibTokens = len(s.Seqs), s.SeqLen, s.Tokens()
		r.search = searchLens(lens(s.Seqs), o.SearchTokens)
		for _, n := range r.search {
			res.SearchTokens += n
		}
		if len(s.Seqs) < o.Samples {
			r.prog.logf("calibration: only %d tokens of text, so %d sequence(s) of %d tokens instead of %d×%d", s.Available, len(s.Seqs), s.SeqLen, o.Samples, o.SeqLen)
		}
	}
	if !o.SkipEval && !measure {
		if r.eval, err = buildEval(tok, o.HeldOut, maxEvalTokens); err != nil {
			return nil, err
		}
	}

	outCfg := quantizedConfig(cfg, group)
	specs, err := outputSpecs(outCfg, set)
	if err != nil {
		return nil, err
	}
	meta := provenance(o, res, cfg, set)
	if measure {
		r.sink = &discardSink{}
	} else {
		if err := prepareOutDir(o.Out, o.Source); err != nil {
			return nil, err
		}
		bw := newBundleWriter(o.Out, specs, meta, maxShardBytes)
		// The deferred check reads this Result, not the named result,
		// which an error return has already set to nil.
		got := res
		defer func() {
			// A bundle that was completed but fails the report stays for
			// inspection; a half-written one is removed.
			if err != nil && got.Report == nil {
				bw.abort()
			}
		}()
		r.sink = bw
		res.Files = slices.Clone(bw.files)
		res.Bytes = bw.total
	}
	res.SetupSeconds = time.Since(start).Seconds()

	t := time.Now()
	if err := r.embedding(); err != nil {
		return nil, err
	}
	res.EmbedSeconds = time.Since(t).Seconds()
	r.initActivations()
	for i := 0; i < res.Layers; i++ {
		st, err := r.layer(i)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		res.LayerStats = append(res.LayerStats, *st)
		r.prog.set(float64(i+1), fmt.Sprintf("layer %d/%d done", i+1, res.Layers))
	}
	r.prog.finish()
	if measure {
		var sum float64
		for _, s := range res.LayerStats {
			sum += s.Seconds
		}
		res.EstimatedSeconds = res.SetupSeconds + res.EmbedSeconds + sum/float64(len(res.LayerStats))*float64(cfg.NumHiddenLayers)
		res.QuantizeSeconds = time.Since(start).Seconds()
		res.Seconds = res.QuantizeSeconds
		return res, nil
	}
	if err := r.tail(); err != nil {
		return nil, err
	}
	bw := r.sink.(*bundleWriter)
	if err := bw.close(); err != nil {
		return nil, err
	}
	if err := outCfg.Write(o.Out); err != nil {
		return nil, err
	}
	if _, err := copySideFiles(o.Out, o.Source); err != nil {
		return nil, err
	}
	if _, err := copyRemoteCode(o.Out, outCfg, o.Source); err != nil {
		return nil, err
	}
	if err := writeCard(o.Out, res, cfg, outCfg); err != nil {
		return nil, err
	}
	res.QuantizeSeconds = time.Since(start).Seconds()

	// The output must pass the same strict report `streamguard verify`
	// prints, or the run fails.
	t = time.Now()
	out, err := checkpoint.Report(o.Out)
	if err != nil {
		return nil, err
	}
	res.Report = out
	if !out.OK() {
		return res, fmt.Errorf("the written bundle %s fails the strict load report: %s", o.Out, strings.Join(reportProblems(out), "; "))
	}
	res.VerifySeconds = time.Since(t).Seconds()

	if len(r.eval) > 0 {
		t = time.Now()
		r.prog.logf("quality report: running source and INT4 on %d held-out conversations", len(r.eval))
		src, err := r.sourceOutputs()
		if err != nil {
			return res, fmt.Errorf("quality report: %w", err)
		}
		// The source mapping is not needed any more: unmap it before the
		// INT4 model loads, so the two never occupy memory together.
		set.Close()
		closed = true
		q, err := evaluate(o.Out, r.eval, src)
		if err != nil {
			return res, fmt.Errorf("quality report: %w", err)
		}
		res.Quality = q
		res.EvalSeconds = time.Since(t).Seconds()
		if err := writeCard(o.Out, res, cfg, outCfg); err != nil {
			return nil, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func (o *Options) defaults() error {
	if o.Source == "" {
		return errors.New("no source model folder given")
	}
	switch o.Method {
	case "":
		o.Method = AWQ
	case AWQ, RTN:
	default:
		return fmt.Errorf("unknown method %q (want awq or rtn)", o.Method)
	}
	switch o.SearchKernel {
	case "":
		o.SearchKernel = SearchInt4
	case SearchInt4, SearchFloat:
	default:
		return fmt.Errorf("unknown search kernel %q (want int4 or float)", o.SearchKernel)
	}
	if o.Samples == 0 {
		o.Samples = DefaultSamples
	}
	if o.SeqLen == 0 {
		o.SeqLen = DefaultSeqLen
	}
	if o.SearchTokens == 0 {
		o.SearchTokens = DefaultSearchTokens
	}
	if o.Samples < 0 || o.SeqLen < 0 || o.SearchTokens < 0 || o.Layers < 0 || o.Group < 0 {
		return errors.New("samples, seqlen, search tokens, layers and group must not be negative")
	}
	if o.Calibration == nil {
		o.Calibration = DefaultCalibration()
	}
	if o.HeldOut == nil {
		o.HeldOut = DefaultHeldOut()
	}
	if o.Version == "" {
		o.Version = "unknown"
	}
	return nil
}

// searchLens picks the search tokens: the first n/L whole sequences, or a
// prefix of n tokens of the first sequence when n is shorter than one.
func searchLens(seqLens []int, n int) []int {
	if n < seqLens[0] {
		return []int{max(n, 1)}
	}
	var out []int
	for _, l := range seqLens {
		if n < l {
			break
		}
		out = append(out, l)
		n -= l
	}
	return out
}

// sourceOK refuses a source that is not a complete, unquantized guard
// model: quantizing an incomplete one is how bundles without heads happen.
func sourceOK(rep *checkpoint.LoadReport) error {
	if !rep.OK() {
		return fmt.Errorf("%s is not a complete Qwen3Guard-Stream model (streamguard verify %s shows the full report): %s",
			rep.Dir, rep.Dir, strings.Join(reportProblems(rep), "; "))
	}
	if rep.Config.IsAWQ() {
		return fmt.Errorf("%s is already AWQ-quantized (%s); quantize the BF16/F16/F32 checkpoint", rep.Dir, rep.Quantization)
	}
	return nil
}

func reportProblems(rep *checkpoint.LoadReport) []string {
	var p []string
	if rep.Diagnosis != "" {
		p = append(p, rep.Diagnosis)
	}
	p = append(p, rep.Problems...)
	if len(p) == 0 {
		p = append(p, "not a complete guard model")
	}
	return p
}

// inFeatures lists the distinct input sizes of the decoder Linears.
func inFeatures(cfg *config.Config) []int {
	return []int{cfg.HiddenSize, cfg.NumAttentionHeads * cfg.HeadDim, cfg.IntermediateSize}
}

// chooseGroup checks a requested group size, or picks 128 or the largest
// power of two below it that divides every in_features (the tiny preset
// has 64 inputs).
func chooseGroup(cfg *config.Config, g int) (int, error) {
	fits := func(g int) bool {
		for _, k := range inFeatures(cfg) {
			if k%g != 0 {
				return false
			}
		}
		return true
	}
	if g > 0 {
		if g%8 != 0 || g > 1024 || !fits(g) {
			return 0, fmt.Errorf("group size %d must be a multiple of 8 up to 1024 that divides every in_features %v", g, inFeatures(cfg))
		}
		return g, nil
	}
	for g = DefaultGroup; g >= 8; g /= 2 {
		if fits(g) {
			return g, nil
		}
	}
	return 0, fmt.Errorf("no group size from 128 down to 8 divides every in_features %v", inFeatures(cfg))
}

// quantizedConfig is the source config with an AutoAWQ quantization_config
// that keeps the 8 heads unconverted.
func quantizedConfig(cfg *config.Config, group int) *config.Config {
	c := *cfg
	c.Extra = maps.Clone(cfg.Extra)
	c.TorchDtype = "float16"
	if _, ok := c.Extra["dtype"]; ok {
		// transformers 4.56 and later write the dtype under this name
		// too, and read it before torch_dtype.
		c.Extra["dtype"] = json.RawMessage(`"float16"`)
	}
	zp := true
	c.QuantizationConfig = &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: group, ZeroPoint: &zp,
		Version: "gemm", ModulesToNotConvert: checkpoint.HeadModules()}
	return &c
}

// outputSpecs declares every output tensor in checkpoint order: packed
// Linears, fp16 embedding and norms (AutoAWQ's convention), and the heads
// in the source's dtype.
func outputSpecs(cfg *config.Config, src *safetensors.Set) ([]safetensors.TensorSpec, error) {
	var specs []safetensors.TensorSpec
	for _, e := range checkpoint.Expected(cfg) {
		if e.Optional {
			continue
		}
		dt := e.DTypes[0]
		if slices.Contains(checkpoint.HeadNames, e.Name) {
			info, _, ok := src.Info(e.Name)
			if !ok {
				return nil, fmt.Errorf("source has no %s", e.Name)
			}
			dt = info.DType
		}
		specs = append(specs, safetensors.TensorSpec{Name: e.Name, DType: dt, Shape: e.Shape})
	}
	return specs, nil
}

// provenance is the safetensors metadata of every output file.
func provenance(o Options, res *Result, cfg *config.Config, src *safetensors.Set) map[string]string {
	m := map[string]string{
		"format":              "pt",
		"quantizer":           "streamguard quantize",
		"streamguard_version": o.Version,
		"source":              o.Source,
		"method":              string(o.Method),
		"bits":                "4",
		"group_size":          strconv.Itoa(res.Group),
		"zero_point":          "true",
		"version":             "gemm",
		"seed":                strconv.FormatUint(o.Seed, 10),
		"heads":               "kept in source precision: " + strings.Join(checkpoint.HeadModules(), ","),
	}
	if cfg.TorchDtype != "" {
		m["source_dtype"] = cfg.TorchDtype
	}
	if o.Method == AWQ {
		m["calibration"] = o.Calibration.Source
		m["calibration_samples"] = strconv.Itoa(res.Samples)
		m["calibration_seqlen"] = strconv.Itoa(res.SeqLen)
		m["search_tokens"] = strconv.Itoa(res.SearchTokens)
		m["search_kernel"] = string(o.SearchKernel)
		m["awq"] = "duo_scaling=true grid=20 clip=true max_shrink=0.5"
	}
	// Say so when the source is itself synthetic.
	for k, v := range src.Metadata() {
		if _, taken := m["source_"+k]; k != "format" && !taken {
			m["source_"+k] = v
		}
	}
	return m
}

// loadTokenizer reads the source's tokenizer, sharing the embedded Qwen3
// one when the file is the stock tokenizer (parsing takes seconds).
func loadTokenizer(dir string) (*tokenizer.Tokenizer, error) {
	path := filepath.Join(dir, "tokenizer.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return tokenizer.LoadQwen3()
	}
	if err != nil {
		return nil, err
	}
	if j, err := qwen3TokenizerJSON(); err == nil && string(j) == string(b) {
		return tokenizer.LoadQwen3()
	}
	return tokenizer.Load(path)
}

// qwen3TokenizerJSON decompresses the embedded tokenizer.json once.
var qwen3TokenizerJSON = sync.OnceValues(func() ([]byte, error) {
	j, _, err := tokenizer.Qwen3Files()
	return j, err
})

// sink receives the output tensors in order: the bundle, or nothing in a
// measurement run (which still does all the work of producing them).
type sink interface {
	begin(name string) error
	Write(p []byte) (int, error)
	tensor(name string, data []byte) error
}

type discardSink struct{}

func (*discardSink) begin(string) error          { return nil }
func (*discardSink) Write(p []byte) (int, error) { return len(p), nil }
func (*discardSink) tensor(string, []byte) error { return nil }
