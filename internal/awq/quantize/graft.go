package quantize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// GraftOptions name the folders of a graft.
type GraftOptions struct {
	// Backbone is the headless INT4 bundle (for example an export that
	// loaded the guard as Qwen3ForCausalLM).
	Backbone string
	// HeadsFrom is the Qwen3Guard-Stream checkpoint the backbone was
	// quantized from; its 8 heads, config and label maps are copied.
	HeadsFrom string
	Out       string
	Version   string
}

// GraftResult describes a graft.
type GraftResult struct {
	Out     string   `json:"out"`
	Checks  []string `json:"checks"`  // what was checked, with the figures
	Dropped []string `json:"dropped"` // backbone tensors left out (lm_head)
	Heads   []string `json:"heads"`   // head tensors copied, with their dtype
	Files   []string `json:"files"`
	Seconds float64  `json:"seconds"`
	// Report is the strict load report of the output; a graft only
	// succeeds when it is OK.
	Report *checkpoint.LoadReport `json:"-"`
}

// Tolerance of the weight check: tensors an AWQ export leaves untouched
// (embedding, final and q/k norms) must agree between the backbone and the
// guard within the rounding of their two dtypes. bf16 keeps 8 significant
// bits, so two roundings of one value differ by at most 2^-8 relative;
// 2^-7 leaves a factor of two. Unrelated weights miss it almost always.
const (
	graftRelTol = 1.0 / 128
	// graftMatchShare is the share of compared values that must agree;
	// the rest allows for values that fp16 holds only as subnormals.
	graftMatchShare = 0.999
	graftRows       = 64 // embedding rows compared
)

// Graft writes a complete guard bundle from a headless INT4 backbone and
// the guard checkpoint it came from: it checks that the two belong together
// (config dimensions, and the weights AWQ does not change), copies every
// backbone tensor except lm_head.*, adds the 8 heads in their stored
// dtype, restores the Qwen3ForGuardModel config with the label maps, lists
// the heads in modules_to_not_convert, and verifies the result with the
// strict load report and a load.
func Graft(o GraftOptions) (*GraftResult, error) {
	start := time.Now()
	if o.Backbone == "" || o.HeadsFrom == "" || o.Out == "" {
		return nil, errors.New("graft needs a backbone, a heads-from folder and an output folder")
	}
	if o.Version == "" {
		o.Version = "unknown"
	}
	bcfg, err := config.Load(o.Backbone)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	if !bcfg.IsAWQ() {
		return nil, fmt.Errorf("backbone %s has no AWQ quantization_config: graft repairs INT4 bundles (a float checkpoint can be quantized with its heads by `streamguard quantize`)", o.Backbone)
	}
	hrep, err := checkpoint.Report(o.HeadsFrom)
	if err != nil {
		return nil, fmt.Errorf("heads-from: %w", err)
	}
	if !hrep.OK() {
		return nil, fmt.Errorf("heads-from %s is not a complete Qwen3Guard-Stream model: %s", o.HeadsFrom, strings.Join(reportProblems(hrep), "; "))
	}
	hcfg := hrep.Config
	res := &GraftResult{Out: o.Out}
	if err := sameBackbone(bcfg, hcfg); err != nil {
		return nil, err
	}
	res.Checks = append(res.Checks, fmt.Sprintf("config: hidden %d, %d layers, vocab %d, intermediate %d, %d/%d heads × %d, rope θ %g, eps %g agree",
		hcfg.HiddenSize, hcfg.NumHiddenLayers, hcfg.VocabSize, hcfg.IntermediateSize, hcfg.NumAttentionHeads, hcfg.NumKeyValueHeads, hcfg.HeadDim, hcfg.RopeTheta, hcfg.RMSNormEps))

	bset, err := safetensors.OpenDir(o.Backbone)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	defer bset.Close()
	hset, err := safetensors.OpenDir(o.HeadsFrom)
	if err != nil {
		return nil, fmt.Errorf("heads-from: %w", err)
	}
	defer hset.Close()
	for _, n := range checkpoint.HeadNames {
		if bset.Has(n) || bset.Has(strings.TrimSuffix(n, ".weight")+".qweight") {
			return nil, fmt.Errorf("backbone %s already holds guard head %s: nothing to graft (streamguard verify %s says what is wrong with it)", o.Backbone, n, o.Backbone)
		}
	}

	outCfg := graftConfig(bcfg, hcfg)
	specs, err := graftSpecs(outCfg, bset, hset)
	if err != nil {
		return nil, err
	}
	for _, n := range bset.Names() {
		if !slices.ContainsFunc(specs, func(s safetensors.TensorSpec) bool { return s.Name == n }) {
			if !strings.HasPrefix(n, "lm_head.") {
				return nil, fmt.Errorf("backbone tensor %s is not part of a guard model; refusing to drop it silently", n)
			}
			res.Dropped = append(res.Dropped, n)
		}
	}
	checks, err := sameWeights(bset, hset, hcfg)
	if err != nil {
		return nil, err
	}
	res.Checks = append(res.Checks, checks...)

	if err := prepareOutDir(o.Out, o.Backbone, o.HeadsFrom); err != nil {
		return nil, err
	}
	meta := map[string]string{
		"format": "pt", "grafted_by": "streamguard graft", "streamguard_version": o.Version,
		"backbone": o.Backbone, "heads_from": o.HeadsFrom, "dropped": strings.Join(res.Dropped, ","),
	}
	for k, v := range bset.Metadata() {
		if k != "format" {
			meta["backbone_"+k] = v
		}
	}
	bw := newBundleWriter(o.Out, specs, meta, maxShardBytes)
	for _, s := range specs {
		from := bset
		if slices.Contains(checkpoint.HeadNames, s.Name) {
			from = hset
			res.Heads = append(res.Heads, fmt.Sprintf("%s %s %v", s.Name, s.DType, s.Shape))
		}
		t, err := from.Tensor(s.Name)
		if err != nil {
			bw.abort()
			return nil, err
		}
		if err := bw.tensor(s.Name, t.Data); err != nil {
			bw.abort()
			return nil, err
		}
		releaseMapped(t.Data)
	}
	if err := bw.close(); err != nil {
		return nil, err
	}
	res.Files = bw.files
	if err := outCfg.Write(o.Out); err != nil {
		return nil, err
	}
	if _, err := copySideFiles(o.Out, o.Backbone, o.HeadsFrom); err != nil {
		return nil, err
	}
	// auto_map comes from the guard (graftConfig), and so does its code.
	if _, err := copyRemoteCode(o.Out, outCfg, o.HeadsFrom, o.Backbone); err != nil {
		return nil, err
	}
	rep, err := checkpoint.Report(o.Out)
	if err != nil {
		return nil, err
	}
	res.Report = rep
	if !rep.OK() {
		return res, fmt.Errorf("the grafted bundle %s fails the strict load report: %s", o.Out, strings.Join(reportProblems(rep), "; "))
	}
	g, err := guard.Load(context.Background(), o.Out, guard.Options{})
	if err != nil {
		return res, fmt.Errorf("the grafted bundle does not load: %w", err)
	}
	g.Close()
	res.Checks = append(res.Checks, "output: strict load report OK, loads with the INT4 kernels")
	if err := writeGraftCard(o, res); err != nil {
		return nil, err
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// sameBackbone compares the dimensions that decide whether a backbone and
// a guard can be the same network.
func sameBackbone(b, h *config.Config) error {
	var diffs []string
	cmp := func(field string, x, y any) {
		if x != y {
			diffs = append(diffs, fmt.Sprintf("%s %v (backbone) vs %v (heads-from)", field, x, y))
		}
	}
	cmp("hidden_size", b.HiddenSize, h.HiddenSize)
	cmp("num_hidden_layers", b.NumHiddenLayers, h.NumHiddenLayers)
	cmp("vocab_size", b.VocabSize, h.VocabSize)
	cmp("intermediate_size", b.IntermediateSize, h.IntermediateSize)
	cmp("num_attention_heads", b.NumAttentionHeads, h.NumAttentionHeads)
	cmp("num_key_value_heads", b.NumKeyValueHeads, h.NumKeyValueHeads)
	cmp("head_dim", b.HeadDim, h.HeadDim)
	cmp("rope_theta", b.RopeTheta, h.RopeTheta)
	cmp("rms_norm_eps", b.RMSNormEps, h.RMSNormEps)
	cmp("max_position_embeddings", b.MaxPositionEmbeddings, h.MaxPositionEmbeddings)
	if b.ModelType != "" && h.ModelType != "" {
		cmp("model_type", b.ModelType, h.ModelType)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("the backbone and the guard are different networks: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// graftConfig is the backbone's config (it describes the stored weights and
// their quantization) turned back into a guard config with the guard's
// head sizes and label maps.
func graftConfig(b, h *config.Config) *config.Config {
	c := *b
	c.Extra = map[string]json.RawMessage{}
	for k, v := range b.Extra {
		c.Extra[k] = v
	}
	if v, ok := h.Extra["auto_map"]; ok {
		c.Extra["auto_map"] = v
	}
	c.Architectures = []string{config.GuardArchitecture}
	c.TieWordEmbeddings = h.TieWordEmbeddings
	c.GuardInnerSize = h.GuardInnerSize
	c.NumRiskLevel, c.NumCategory, c.NumQueryRiskLevel, c.NumQueryCategory = h.NumRiskLevel, h.NumCategory, h.NumQueryRiskLevel, h.NumQueryCategory
	c.ResponseRiskLevelMap, c.ResponseCategoryMap = h.ResponseRiskLevelMap, h.ResponseCategoryMap
	c.QueryRiskLevelMap, c.QueryCategoryMap = h.QueryRiskLevelMap, h.QueryCategoryMap
	q := *b.QuantizationConfig
	q.ModulesToNotConvert = slices.Clone(q.ModulesToNotConvert)
	for _, m := range checkpoint.HeadModules() {
		if !slices.Contains(q.ModulesToNotConvert, m) {
			q.ModulesToNotConvert = append(q.ModulesToNotConvert, m)
		}
	}
	c.QuantizationConfig = &q
	return &c
}

// graftSpecs lists the output tensors in checkpoint order with their
// stored dtypes and shapes: the backbone's, then the heads from the guard.
func graftSpecs(cfg *config.Config, bset, hset *safetensors.Set) ([]safetensors.TensorSpec, error) {
	var specs []safetensors.TensorSpec
	var missing []string
	for _, e := range checkpoint.Expected(cfg) {
		from := bset
		if slices.Contains(checkpoint.HeadNames, e.Name) {
			from = hset
		}
		info, _, ok := from.Info(e.Name)
		if !ok {
			if !e.Optional {
				missing = append(missing, e.Name)
			}
			continue
		}
		specs = append(specs, safetensors.TensorSpec{Name: e.Name, DType: info.DType, Shape: info.Shape})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the backbone lacks %d tensor(s) a guard model needs: %s", len(missing), listSome(missing, 8))
	}
	return specs, nil
}

func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, ... and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// sameWeights compares the tensors AWQ leaves as they are: sampled rows of
// the embedding, the final norm and every q_norm/k_norm. A backbone
// quantized from another model fails here even when the shapes agree.
func sameWeights(bset, hset *safetensors.Set, cfg *config.Config) ([]string, error) {
	names := []string{"model.norm.weight"}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.self_attn.", i)
		names = append(names, p+"q_norm.weight", p+"k_norm.weight")
	}
	var n, ok int
	worst := 0.0
	compare := func(a, b []float32) {
		for i := range a {
			d := math.Abs(float64(a[i]) - float64(b[i]))
			scale := math.Max(math.Abs(float64(a[i])), math.Abs(float64(b[i])))
			rel := d / math.Max(scale, 1e-30)
			if d == 0 {
				rel = 0
			}
			n++
			if rel <= graftRelTol {
				ok++
			}
			worst = math.Max(worst, rel)
		}
	}
	for _, name := range names {
		a, err := vector(bset, name)
		if err != nil {
			return nil, fmt.Errorf("backbone: %w", err)
		}
		b, err := vector(hset, name)
		if err != nil {
			return nil, fmt.Errorf("heads-from: %w", err)
		}
		if len(a) != len(b) {
			return nil, fmt.Errorf("%s has %d values in the backbone and %d in the guard", name, len(a), len(b))
		}
		compare(a, b)
	}
	normN, normOK, normWorst := n, ok, worst
	const embed = "model.embed_tokens.weight"
	ea, err := bset.Tensor(embed)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	eb, err := hset.Tensor(embed)
	if err != nil {
		return nil, fmt.Errorf("heads-from: %w", err)
	}
	H, V := cfg.HiddenSize, cfg.VocabSize
	n, ok, worst = 0, 0, 0
	for i := range graftRows {
		row := int(uint64(i) * uint64(V) / graftRows)
		a, err := rowF32(ea, row, H)
		if err != nil {
			return nil, fmt.Errorf("backbone: %w", err)
		}
		b, err := rowF32(eb, row, H)
		if err != nil {
			return nil, fmt.Errorf("heads-from: %w", err)
		}
		compare(a, b)
	}
	checks := []string{
		fmt.Sprintf("norms untouched by AWQ (model.norm, %d q/k norms): %d/%d values agree within 2^-7, worst relative difference %.2g", 2*cfg.NumHiddenLayers, normOK, normN, normWorst),
		fmt.Sprintf("embedding (%d rows sampled): %d/%d values agree within 2^-7, worst relative difference %.2g", graftRows, ok, n, worst),
	}
	if float64(normOK) < graftMatchShare*float64(normN) || float64(ok) < graftMatchShare*float64(n) {
		return checks, fmt.Errorf("the backbone was not quantized from this guard (the weights AWQ leaves unchanged differ): %s; %s", checks[0], checks[1])
	}
	return checks, nil
}

func vector(set *safetensors.Set, name string) ([]float32, error) {
	t, err := set.Tensor(name)
	if err != nil {
		return nil, err
	}
	v, err := t.Float32s()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return v, nil
}

// rowF32 reads one row of a 2-D float tensor.
func rowF32(t *safetensors.Tensor, row, width int) ([]float32, error) {
	if len(t.Shape) != 2 || t.Shape[1] != width || row >= t.Shape[0] {
		return nil, fmt.Errorf("tensor %q has shape %v, want [vocab, %d]", t.Name, t.Shape, width)
	}
	es := t.DType.Size()
	b := t.Data[row*width*es : (row+1)*width*es]
	out := make([]float32, width)
	for i := range out {
		switch t.DType {
		case safetensors.F32:
			out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		case safetensors.BF16:
			out[i] = half.BF16ToF32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		case safetensors.F16:
			out[i] = half.F16ToF32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		default:
			return nil, fmt.Errorf("tensor %q: dtype %s is not a float", t.Name, t.DType)
		}
	}
	return out, nil
}

// writeGraftCard documents the repair next to the weights.
func writeGraftCard(o GraftOptions, res *GraftResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "---\nlibrary_name: streamguard\ntags:\n- qwen3guard-stream\n- awq\n- int4\n- safety\n---\n\n")
	fmt.Fprintf(&b, "# Repaired INT4 guard bundle\n\nThe AWQ INT4 backbone `%s` with the 8 guard heads of `%s`, grafted by `streamguard graft` (streamguard %s). "+
		"The backbone had lost the classifier heads; they are restored in their stored precision and listed in `modules_to_not_convert`, "+
		"and the config declares %s again with the label maps.\n\n", o.Backbone, o.HeadsFrom, o.Version, config.GuardArchitecture)
	b.WriteString("## Checks\n\n")
	for _, c := range res.Checks {
		fmt.Fprintf(&b, "- %s\n", c)
	}
	if len(res.Dropped) > 0 {
		fmt.Fprintf(&b, "\nDropped from the backbone: `%s` (a guard has no language-model head).\n", strings.Join(res.Dropped, "`, `"))
	}
	return os.WriteFile(filepath.Join(o.Out, "README.md"), []byte(b.String()), 0o644)
}
