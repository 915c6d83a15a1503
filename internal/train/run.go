package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Init values.
const (
	InitExisting = "existing" // start from the source model's heads
	InitRandom   = "random"   // start from a fresh initialisation
)

// ReportFile is the training report written next to the new model.
const ReportFile = "train_heads_report.json"

// Options configure Run.
type Options struct {
	Model string // source model folder (BF16, F16, F32 or AWQ INT4 backbone)
	Data  string // training data (JSON lines)
	Out   string // new model folder (must not exist, or be empty)
	// Val is validation data; empty splits ValFraction of Data's examples
	// off (by conversation, from the seed).
	Val         string
	ValFraction float64
	// Categories is the category list of every trained path, in head-row
	// order; empty takes the source model's list when every category of
	// the data is in it and Init is existing, else the data's categories
	// in order of first appearance.
	Categories []string
	// Paths to train; empty trains every path the data labels.
	Paths []Path
	Init  string // InitExisting or InitRandom
	// Inner is guard_inner_size; 0 keeps the source's. Another size needs
	// both paths trained from a random init.
	Inner                   int
	Epochs, Batch, Patience int
	LR, WeightDecay         float64
	Seed                    uint64
	// CacheDir holds the feature cache; empty disables it.
	CacheDir string
	// Threads for the backbone and the head kernels; 0 is GOMAXPROCS.
	Threads int
	// Device runs the backbone's feature pass ("cpu", "auto", "cuda[:N]",
	// as guard.Options.Device); the heads train on the CPU.
	Device string
	// Copy copies the backbone files instead of hard-linking them.
	Copy bool
	// Log receives progress lines; nil is silent.
	Log io.Writer
}

// DefaultOptions are the defaults the command line shows.
func DefaultOptions() Options {
	return Options{ValFraction: 0.1, Init: InitExisting, Epochs: 30, Batch: 64, Patience: 4, LR: 1e-3, WeightDecay: 0.01, Seed: 1}
}

// FeatureStats describe the feature extraction of one data file.
type FeatureStats struct {
	File          string `json:"file"`
	Conversations int    `json:"conversations"`
	Rows          int    `json:"rows"`
	// Tokens is the number of tokens the backbone ran (0 on a cache hit).
	Tokens          int     `json:"tokens"`
	Seconds         float64 `json:"seconds"`
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	Cache           string  `json:"cache"` // "hit", "miss" (extracted and stored) or "off"
	Key             string  `json:"key,omitempty"`
}

// PathReport is the outcome of training one path.
type PathReport struct {
	Path     Path     `json:"path"`
	Taxonomy Taxonomy `json:"taxonomy"`
	Init     string   `json:"init"`
	// KeptCategories are the categories whose rows the existing init took
	// from the source model.
	KeptCategories  []string     `json:"kept_categories,omitempty"`
	TrainSamples    int          `json:"train_samples"`
	ValSamples      int          `json:"val_samples"`
	Epochs          []EpochStats `json:"epochs"`
	BestEpoch       int          `json:"best_epoch"`
	SecondsPerEpoch float64      `json:"seconds_per_epoch"`
	DTypes          []string     `json:"dtypes"`
	// Train and Val evaluate the written (dtype-rounded) weights through
	// the engine's head forward.
	Train Evaluation  `json:"train"`
	Val   *Evaluation `json:"val,omitempty"`

	// EvalSamples are the validation samples and Predictions the written
	// model's verdicts on them, for comparing with the engine's.
	EvalSamples []Sample     `json:"-"`
	Predictions []Prediction `json:"-"`
	// evalExamples are the examples EvalSamples index.
	evalExamples []*Example
}

// Report is what Run did.
type Report struct {
	Model       string         `json:"model"`
	Out         string         `json:"out"`
	Backbone    string         `json:"backbone"` // "bf16", "awq w4 g128", ...
	Hidden      int            `json:"hidden"`
	Inner       int            `json:"guard_inner_size"`
	Threads     int            `json:"threads"`
	Seed        uint64         `json:"seed"`
	KeySeconds  float64        `json:"key_seconds"`
	Features    []FeatureStats `json:"features"`
	Paths       []PathReport   `json:"paths"`
	Files       []OutputFile   `json:"files"`
	LoadSeconds float64        `json:"load_seconds"`
	Seconds     float64        `json:"seconds"`

	// ValExamples are the validation examples (their Line fields number
	// the lines of their file), for comparing predictions.
	ValExamples []*Example `json:"-"`
}

// Run trains new heads on the frozen backbone of o.Model and writes the new
// model to o.Out. ctx bounds loading the model.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if err := o.Check(); err != nil {
		return nil, err
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", a...)
		}
	}
	if err := checkOut(o.Model, o.Out); err != nil {
		return nil, err
	}
	exs, err := ReadData(o.Data)
	if err != nil {
		return nil, err
	}
	var valExs []*Example
	if o.Val != "" {
		if valExs, err = ReadData(o.Val); err != nil {
			return nil, err
		}
	}

	m, err := guard.Load(ctx, o.Model, guard.Options{Threads: o.Threads, Device: o.Device})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	bb := modelBackbone(m)
	net, tok := bb.net, guardhook.Tokenizer(m)
	cfg := net.Config
	set, err := safetensors.OpenDir(o.Model)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	rep := &Report{Model: o.Model, Out: o.Out, Backbone: backboneName(cfg, set), Hidden: net.Hidden(),
		Threads: threads(o.Threads), Seed: o.Seed, LoadSeconds: time.Since(start).Seconds()}

	paths, err := choosePaths(o.Paths, exs)
	if err != nil {
		return nil, err
	}
	inner := cfg.GuardInnerSize
	if o.Inner > 0 && o.Inner != inner {
		if len(paths) != 2 || o.Init != InitRandom {
			return nil, fmt.Errorf("--inner %d differs from the model's guard_inner_size %d: both paths share it, so both must be trained (--paths query,response) from --init random", o.Inner, inner)
		}
		inner = o.Inner
	}
	rep.Inner = inner
	taxes := map[Path]Taxonomy{}
	for _, p := range paths {
		tax, err := taxonomy(p, net.Labels, o, exs)
		if err != nil {
			return nil, err
		}
		taxes[p] = tax
	}

	// Render and label everything before running the backbone, so that a
	// data error shows in seconds, not after the extraction.
	train, err := prepare(net, tok, filepath.Base(o.Data), exs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Data, err)
	}
	val := train
	var valIdx map[int]bool
	if o.Val != "" {
		if val, err = prepare(net, tok, filepath.Base(o.Val), valExs); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Val, err)
		}
		rep.ValExamples = valExs
	} else if o.ValFraction > 0 {
		valIdx = map[int]bool{}
		k := int(float64(len(exs))*o.ValFraction + 0.5)
		for _, i := range newRNG(o.Seed, "validation split").perm(len(exs))[:k] {
			valIdx[i] = true
			rep.ValExamples = append(rep.ValExamples, exs[i])
		}
		slices.SortFunc(rep.ValExamples, func(a, b *Example) int { return a.Line - b.Line })
	}
	trainS, valS := map[Path][]Sample{}, map[Path][]Sample{}
	for _, p := range paths {
		tax := taxes[p]
		ts, err := Samples(train.exs, train.convs, train.rows, p, tax)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Data, err)
		}
		var vs []Sample
		if o.Val != "" {
			if vs, err = Samples(val.exs, val.convs, val.rows, p, tax); err != nil {
				return nil, fmt.Errorf("%s: %w", o.Val, err)
			}
		} else if valIdx != nil {
			var rest []Sample
			for _, s := range ts {
				if valIdx[s.Example] {
					vs = append(vs, s)
				} else {
					rest = append(rest, s)
				}
			}
			ts = rest
		}
		if len(ts) == 0 {
			return nil, fmt.Errorf("%s: no %s training samples left after the validation split", o.Data, p)
		}
		trainS[p], valS[p] = ts, vs
	}

	// Features.
	key := ""
	if o.CacheDir != "" {
		t0 := time.Now()
		if key, err = backboneKey(set, cfg, bb); err != nil {
			return nil, err
		}
		rep.KeySeconds = time.Since(t0).Seconds()
	}
	if err := train.features(bb, key, o.CacheDir, logf); err != nil {
		return nil, fmt.Errorf("%s: %w", o.Data, err)
	}
	rep.Features = append(rep.Features, train.stats)
	if o.Val != "" {
		if err := val.features(bb, key, o.CacheDir, logf); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Val, err)
		}
		rep.Features = append(rep.Features, val.stats)
	}

	newHeads := map[string]*safetensors.Tensor{}
	for _, p := range paths {
		pr, heads, err := trainPath(p, taxes[p], inner, net, set, o, Data{X: train.X, Samples: trainS[p]}, Data{X: val.X, Samples: valS[p]}, logf)
		if err != nil {
			return nil, err
		}
		pr.evalExamples = val.exs
		for k, v := range heads {
			newHeads[k] = v
		}
		rep.Paths = append(rep.Paths, *pr)
	}

	newCfg := withTaxonomy(cfg, inner, taxes)
	if err := newCfg.Validate(true); err != nil {
		return nil, fmt.Errorf("internal error: the new config.json is invalid: %w", err)
	}
	if rep.Files, err = writeModel(o.Model, o.Out, set, newCfg, newHeads, o.Copy); err != nil {
		return nil, err
	}
	rep.Seconds = time.Since(start).Seconds()
	if err := writeReport(o.Out, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// Check validates the options without touching any file.
func (o *Options) Check() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.Model == "" || o.Data == "" || o.Out == "" {
		bad("the model, the data and the output folder are required")
	}
	if o.Init != InitExisting && o.Init != InitRandom {
		bad("init %q: want existing or random", o.Init)
	}
	if o.Epochs < 1 || o.Batch < 1 {
		bad("epochs and batch must be at least 1")
	}
	if o.Patience < 0 || o.Inner < 0 || o.Threads < 0 {
		bad("patience, inner and threads must not be negative")
	}
	// Written so that NaN fails each test.
	if !(o.LR > 0) || math.IsInf(o.LR, 0) || !(o.WeightDecay >= 0) || !(o.LR*o.WeightDecay < 1) {
		bad("the learning rate must be positive and the weight decay non-negative (lr×decay below 1)")
	}
	if !(o.ValFraction >= 0 && o.ValFraction < 1) {
		bad("the validation fraction must be in [0, 1)")
	}
	seen := map[string]bool{}
	for _, c := range o.Categories {
		switch {
		case strings.TrimSpace(c) == "":
			bad("empty category name in the category list")
		case seen[c]:
			bad("category %q listed twice", c)
		}
		seen[c] = true
	}
	return errors.Join(errs...)
}

// choosePaths returns the paths to train: the requested ones, which must
// have labels, or every labelled one.
func choosePaths(want []Path, exs []*Example) ([]Path, error) {
	has := func(p Path) bool { return slices.ContainsFunc(exs, func(ex *Example) bool { return labelled(ex, p) }) }
	if len(want) == 0 {
		for _, p := range Paths {
			if has(p) {
				want = append(want, p)
			}
		}
		return want, nil
	}
	for _, p := range want {
		if !has(p) {
			field := map[Path]string{Query: "prompt", Response: "response"}[p]
			return nil, fmt.Errorf("path %s has no labels in the training data (no %q field on any line)", p, field)
		}
	}
	return want, nil
}

// taxonomy decides the label set of path p.
func taxonomy(p Path, src *config.Labels, o Options, exs []*Example) (Taxonomy, error) {
	risk, srcCats := src.QueryRisk, src.QueryCategory
	if p == Response {
		risk, srcCats = src.ResponseRisk, src.ResponseCategory
	}
	tax := Taxonomy{Risk: slices.Clone(risk), Categories: slices.Clone(o.Categories)}
	if len(tax.Categories) == 0 {
		data := DataCategories(exs, p)
		if o.Init == InitExisting && !slices.ContainsFunc(data, func(c string) bool { return !slices.Contains(srcCats, c) }) {
			tax.Categories = slices.Clone(srcCats)
		} else {
			tax.Categories = data
		}
	}
	if len(tax.Categories) == 0 {
		return tax, fmt.Errorf("path %s: no categories (every label is Safe); give --categories", p)
	}
	return tax, nil
}

// fileFeatures are one data file's conversations and hidden states.
type fileFeatures struct {
	exs       []*Example
	convs     []*Conversation
	positions [][]int
	rows      []exampleRows
	X         []float32
	stats     FeatureStats
}

// prepare renders exs and plans their feature rows.
func prepare(net *qwen3.Model, tok *tokenizer.Tokenizer, name string, exs []*Example) (*fileFeatures, error) {
	ff := &fileFeatures{exs: exs, stats: FeatureStats{File: name, Conversations: len(exs), Cache: "off"}}
	for _, ex := range exs {
		c, err := Render(tok, ex.Messages)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", ex.Line, err)
		}
		if len(c.IDs) > net.MaxPositions {
			return nil, fmt.Errorf("line %d: %d tokens, more than max_position_embeddings %d", ex.Line, len(c.IDs), net.MaxPositions)
		}
		ff.convs = append(ff.convs, c)
	}
	ff.positions, ff.rows, ff.stats.Rows = featurePlan(exs, ff.convs)
	return ff, nil
}

// features loads the planned hidden states from the cache, or extracts
// (and stores) them.
func (ff *fileFeatures) features(bb backbone, backbone, cacheDir string, logf func(string, ...any)) error {
	start := time.Now()
	name, total, H := ff.stats.File, ff.stats.Rows, bb.net.Hidden()
	if cacheDir != "" {
		ff.stats.Key = featureKey(backbone, ff.convs, ff.positions)
		x, stale, err := loadCache(cacheDir, ff.stats.Key, total, H)
		if err != nil {
			return err
		}
		if stale != nil {
			logf("feature cache entry unusable, extracting again: %v", stale)
		}
		if x != nil {
			ff.X = x
			ff.stats.Cache = "hit"
			ff.stats.Seconds = time.Since(start).Seconds()
			logf("features %s: %d rows from the cache (%.1fs)", name, total, ff.stats.Seconds)
			return nil
		}
	}
	lastLog := time.Now()
	x, tokens, err := extract(bb, ff.convs, ff.positions, func(done, all, tokens int, el time.Duration) {
		if time.Since(lastLog) > 10*time.Second || done == all {
			lastLog = time.Now()
			logf("features %s: %d/%d conversations, %d tokens, %.1f tokens/s", name, done, all, tokens, float64(tokens)/el.Seconds())
		}
	})
	if err != nil {
		return err
	}
	ff.X = x
	ff.stats.Tokens = tokens
	ff.stats.Seconds = time.Since(start).Seconds()
	if ff.stats.Seconds > 0 {
		ff.stats.TokensPerSecond = float64(tokens) / ff.stats.Seconds
	}
	if cacheDir != "" {
		ff.stats.Cache = "miss"
		if err := storeCache(cacheDir, ff.stats.Key, x, total, H); err != nil {
			return fmt.Errorf("feature cache: %w", err)
		}
	}
	return nil
}

// trainPath fits one path and evaluates the written weights.
func trainPath(p Path, tax Taxonomy, inner int, net *qwen3.Model, set *safetensors.Set, o Options, train, val Data, logf func(string, ...any)) (*PathReport, map[string]*safetensors.Tensor, error) {
	names := headNames(p)
	var dts HeadDTypes
	for i, n := range names {
		info, _, ok := set.Info(n)
		if !ok {
			return nil, nil, fmt.Errorf("source model has no %s", n)
		}
		dts[i] = info.DType
	}
	srcLabels := net.Labels
	srcCats := srcLabels.QueryCategory
	if p == Response {
		srcCats = srcLabels.ResponseCategory
	}
	h := NewHead(net.Hidden(), inner, len(tax.Risk), len(tax.Categories), float32(net.Config.RMSNormEps))
	h.InitRandom(o.Seed, p)
	pr := &PathReport{Path: p, Taxonomy: tax, Init: o.Init, TrainSamples: len(train.Samples), ValSamples: len(val.Samples)}
	for _, d := range dts {
		pr.DTypes = append(pr.DTypes, string(d))
	}
	if o.Init == InitExisting {
		kept, err := h.initExisting(set, p, srcCats, tax.Categories)
		if err != nil {
			return nil, nil, err
		}
		pr.KeptCategories = kept
	}
	logf("training %s heads: %d categories, %d training and %d validation samples", p, len(tax.Categories), len(train.Samples), len(val.Samples))
	fo := FitOptions{Epochs: o.Epochs, Batch: o.Batch, Patience: o.Patience, LR: o.LR, WeightDecay: o.WeightDecay, Seed: o.Seed,
		Log: func(s EpochStats) {
			mark := ""
			if s.Best {
				mark = " *"
			}
			logf("  %s epoch %d: train loss %.4f, val loss %.4f, risk acc %.4f, category acc %.4f, %.2fs%s",
				p, s.Epoch, s.TrainLoss, s.ValLoss, s.ValRiskAccuracy, s.ValCategoryAccuracy, s.Seconds, mark)
		}}
	best, stats, err := Fit(h, p, train, val, fo)
	if err != nil {
		return nil, nil, err
	}
	pr.Epochs = stats
	var secs float64
	for _, s := range stats {
		secs += s.Seconds
		if s.Best {
			pr.BestEpoch = s.Epoch
		}
	}
	pr.SecondsPerEpoch = secs / float64(len(stats))
	st, err := roundHead(best, dts)
	if err != nil {
		return nil, nil, err
	}
	eh := st.engineHead(best)
	pr.Train = Evaluate(train.Samples, predict(eh, best.Hidden, train), tax)
	if len(val.Samples) > 0 {
		pr.Predictions = predict(eh, best.Hidden, val)
		ev := Evaluate(val.Samples, pr.Predictions, tax)
		pr.Val = &ev
		pr.EvalSamples = val.Samples
	}
	return pr, headTensors(p, best, st), nil
}

// writeReport stores the report next to the model. A file of that name
// linked from the source is replaced, never written through.
func writeReport(out string, rep *Report) error {
	path := filepath.Join(out, ReportFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func backboneName(cfg *config.Config, set *safetensors.Set) string {
	if q := cfg.QuantizationConfig; cfg.IsAWQ() {
		return fmt.Sprintf("awq w%d g%d", q.Bits, q.GroupSize)
	}
	if info, _, ok := set.Info("model.norm.weight"); ok {
		return strings.ToLower(string(info.DType))
	}
	return "unknown"
}

func threads(n int) int {
	if n > 0 {
		return n
	}
	return kernels.Threads()
}
