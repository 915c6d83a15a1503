package checkpoint_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

var fixtures struct {
	sync.Mutex
	base string
	dirs map[string]string // by fixtureKey
}

// fixtureKey names generated folders by their options (Progress aside:
// a func is not comparable and does not change the files).
func fixtureKey(o synth.Options) string {
	o.Progress = nil
	return fmt.Sprintf("%#v", o)
}

func TestMain(m *testing.M) {
	base, err := os.MkdirTemp("", "checkpoint-test-")
	if err != nil {
		panic(err)
	}
	fixtures.base = base
	fixtures.dirs = map[string]string{}
	code := m.Run()
	os.RemoveAll(base)
	os.Exit(code)
}

// gen returns a private copy of a generated tiny folder; each distinct
// Options is generated once per test binary and copied, which is much
// cheaper than generating again.
func gen(t testing.TB, o synth.Options) string {
	t.Helper()
	if o.Preset == "" {
		o.Preset = "tiny"
	}
	fixtures.Lock()
	src, ok := fixtures.dirs[fixtureKey(o)]
	if !ok {
		src = filepath.Join(fixtures.base, fmt.Sprintf("m%d", len(fixtures.dirs)))
		if _, err := synth.Generate(src, o); err != nil {
			fixtures.Unlock()
			t.Fatal(err)
		}
		fixtures.dirs[fixtureKey(o)] = src
	}
	fixtures.Unlock()
	dst := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func report(t testing.TB, dir string) *checkpoint.LoadReport {
	t.Helper()
	r, err := checkpoint.Report(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// problem returns the first problem containing every fragment.
func problem(r *checkpoint.LoadReport, fragments ...string) string {
	for _, p := range r.Problems {
		all := true
		for _, f := range fragments {
			all = all && strings.Contains(p, f)
		}
		if all {
			return p
		}
	}
	return ""
}

func status(r *checkpoint.LoadReport, name string) checkpoint.TensorReport {
	for _, t := range r.Tensors {
		if t.Name == name {
			return t
		}
	}
	return checkpoint.TensorReport{}
}

// rewrite replaces dir/model.safetensors with edit applied to its tensors.
func rewrite(t *testing.T, dir string, edit func([]*safetensors.Tensor) []*safetensors.Tensor) {
	t.Helper()
	path := filepath.Join(dir, safetensors.SingleFile)
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*safetensors.Tensor
	for _, n := range f.Names() {
		x, err := f.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		x.Data = slices.Clone(x.Data)
		ts = append(ts, x)
	}
	meta := f.Metadata()
	f.Close()
	if err := safetensors.WriteFile(path, meta, edit(ts)); err != nil {
		t.Fatal(err)
	}
}

func editConfig(t *testing.T, dir string, edit func(*config.Config)) {
	t.Helper()
	c, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(c)
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
}

func TestReportGeneratedOK(t *testing.T) {
	for _, o := range []synth.Options{
		{DType: "f32"}, {DType: "bf16"}, {DType: "f16"}, {DType: "awq"},
		{DType: "bf16", Shards: 3, OutlierChannels: 4}, {DType: "awq", Group: 32},
	} {
		r := report(t, gen(t, o))
		if !r.OK() {
			var sb strings.Builder
			r.WriteText(&sb)
			t.Errorf("%+v: not OK:\n%s", o, sb.String())
			continue
		}
		want := 32
		if o.DType == "awq" {
			want = 32 + 2*7*2 // each of 14 Linears: weight -> qweight, qzeros, scales
		}
		if r.Counts[checkpoint.Used] != want || len(r.Tensors) != want {
			t.Errorf("%+v: %d used of %d, want %d", o, r.Counts[checkpoint.Used], len(r.Tensors), want)
		}
		if r.Metadata["generator"] != synth.Generator {
			t.Errorf("metadata %v", r.Metadata)
		}
		// Tiny has 9.8M weights: embedding 151936*64 + 2 layers + heads.
		const params = 151936*64 + 2*(64+64*64+32*64*2+64*64+16*2+64+128*64*3) + 64 + 2*(32*64+32) + 32*(3+8+3+9)
		if r.Parameters != params {
			t.Errorf("%+v: %d parameters, want %d", o, r.Parameters, params)
		}
	}
}

// TestReportNoesis: the broken-export replica is refused with the 8 head
// names and the explanation, and its lm_head is flagged by the heuristic.
func TestReportNoesis(t *testing.T) {
	r := report(t, gen(t, synth.Options{Noesis: true, Seed: 3}))
	if r.OK() {
		t.Fatal("noesis replica accepted")
	}
	for _, n := range checkpoint.HeadNames {
		if !strings.Contains(r.Diagnosis, n) {
			t.Errorf("diagnosis does not name %s", n)
		}
		if s := status(r, n); s.Status != checkpoint.Missing {
			t.Errorf("%s: %s", n, s.Status)
		}
	}
	for _, f := range []string{"broken INT4 export", "Qwen3ForCausalLM", "cannot do stream safety classification", "streamguard graft"} {
		if !strings.Contains(r.Diagnosis, f) {
			t.Errorf("diagnosis lacks %q: %s", f, r.Diagnosis)
		}
	}
	if s := status(r, "lm_head.weight"); s.Status != checkpoint.Unexpected || !strings.Contains(s.Note, "no lm_head") {
		t.Errorf("lm_head: %+v", s)
	}
	if len(r.Heuristics) != 1 || !r.Heuristics[0].Flagged || !strings.HasPrefix(r.Heuristics[0].Message, "HEURISTIC") {
		t.Errorf("heuristics %+v", r.Heuristics)
	}
	if r.Guard || problem(r, "not a Qwen3Guard-Stream model") == "" {
		t.Errorf("problems %q", r.Problems)
	}
	var sb strings.Builder
	if err := r.WriteText(&sb); err != nil {
		t.Fatal(err)
	}
	// The count is of the problems listed, the diagnosis beside them.
	count := fmt.Sprintf("(%d problem", len(r.Problems))
	for _, f := range []string{"REFUSED", "Diagnosis: broken INT4 export", "HEURISTIC: lm_head.weight looks like a fresh random initialisation", count, "and a diagnosis)"} {
		if !strings.Contains(sb.String(), f) {
			t.Errorf("text output lacks %q:\n%s", f, sb.String())
		}
	}
}

func TestReportTruncated(t *testing.T) {
	dir := gen(t, synth.Options{})
	path := filepath.Join(dir, safetensors.SingleFile)
	st, _ := os.Stat(path)
	if err := os.Truncate(path, st.Size()-1000); err != nil {
		t.Fatal(err)
	}
	r := report(t, dir)
	if r.OK() || problem(r, "checkpoint unreadable", path) == "" || len(r.Tensors) != 0 {
		t.Errorf("problems %q", r.Problems)
	}
	// A file cut inside its header length prefix.
	if err := os.Truncate(path, 5); err != nil {
		t.Fatal(err)
	}
	if r := report(t, dir); problem(r, "truncated file") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}

func TestReportCorruptHeader(t *testing.T) {
	dir := gen(t, synth.Options{})
	path := filepath.Join(dir, safetensors.SingleFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("{\"x\":"), 8); err != nil { // break the JSON
		t.Fatal(err)
	}
	f.Close()
	r := report(t, dir)
	if r.OK() || problem(r, "checkpoint unreadable", path) == "" {
		t.Errorf("problems %q", r.Problems)
	}
	// A length prefix far beyond the file.
	f, _ = os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1<<40)
	f.WriteAt(b[:], 0)
	f.Close()
	if r := report(t, dir); problem(r, "header length") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}

func TestReportMissingShard(t *testing.T) {
	dir := gen(t, synth.Options{Shards: 3})
	shard := filepath.Join(dir, "model-00002-of-00003.safetensors")
	if err := os.Remove(shard); err != nil {
		t.Fatal(err)
	}
	r := report(t, dir)
	if r.OK() || problem(r, "model-00002-of-00003.safetensors", "missing") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}

func TestReportShapeDisagreesWithConfig(t *testing.T) {
	dir := gen(t, synth.Options{})
	editConfig(t, dir, func(c *config.Config) { c.IntermediateSize = 96 })
	r := report(t, dir)
	if r.OK() || r.Counts[checkpoint.WrongShape] != 6 {
		t.Fatalf("%d wrong shapes, problems %q", r.Counts[checkpoint.WrongShape], r.Problems)
	}
	s := status(r, "model.layers.1.mlp.down_proj.weight")
	if s.Status != checkpoint.WrongShape || !slices.Equal(s.ExpectedShape, []int{64, 96}) || !slices.Equal(s.Shape, []int{64, 128}) {
		t.Errorf("down_proj %+v", s)
	}
	if problem(r, "model.layers.1.mlp.down_proj.weight is BF16 [64, 128]; config.json implies [64, 96]") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}

func TestReportGuardFolderWithLMHead(t *testing.T) {
	dir := gen(t, synth.Options{DType: "f32"})
	rewrite(t, dir, func(ts []*safetensors.Tensor) []*safetensors.Tensor {
		// A copy of the (uniform, not Gaussian) embedding as a tied lm_head.
		for _, x := range ts {
			if x.Name == "model.embed_tokens.weight" {
				return append(ts, &safetensors.Tensor{Name: "lm_head.weight", DType: x.DType, Shape: x.Shape, Data: x.Data})
			}
		}
		return ts
	})
	r := report(t, dir)
	if r.OK() || r.Diagnosis != "" {
		t.Fatalf("accepted or diagnosed %q", r.Diagnosis)
	}
	if s := status(r, "lm_head.weight"); s.Status != checkpoint.Unexpected {
		t.Errorf("lm_head %+v", s)
	}
	if problem(r, "1 tensor not part of the model (UNEXPECTED): lm_head.weight") == "" {
		t.Errorf("problems %q", r.Problems)
	}
	// Uniform values have excess kurtosis -1.2: not a Gaussian init.
	if len(r.Heuristics) != 1 || r.Heuristics[0].Flagged {
		t.Errorf("heuristic %+v", r.Heuristics)
	}
}

func TestReportMissingTokenizer(t *testing.T) {
	for _, name := range checkpoint.TokenizerFiles {
		dir := gen(t, synth.Options{})
		os.Remove(filepath.Join(dir, name))
		r := report(t, dir)
		if r.OK() || problem(r, name+" is missing") == "" {
			t.Errorf("%s: problems %q", name, r.Problems)
		}
	}
}

func TestReportWrongDType(t *testing.T) {
	dir := gen(t, synth.Options{DType: "awq"})
	rewrite(t, dir, func(ts []*safetensors.Tensor) []*safetensors.Tensor {
		for _, x := range ts {
			switch x.Name {
			case "model.layers.0.mlp.up_proj.scales": // F16 -> BF16, same size
				x.DType = safetensors.BF16
			case "model.layers.1.self_attn.q_proj.qweight": // I32 -> F32
				x.DType = safetensors.F32
			}
		}
		return ts
	})
	r := report(t, dir)
	if r.OK() || r.Counts[checkpoint.WrongDType] != 2 {
		t.Fatalf("counts %v problems %q", r.Counts, r.Problems)
	}
	if s := status(r, "model.layers.0.mlp.up_proj.scales"); s.Status != checkpoint.WrongDType || !strings.Contains(s.Note, "scales must be F16") {
		t.Errorf("scales %+v", s)
	}
	if problem(r, "model.layers.1.self_attn.q_proj.qweight is F32", "qweight must be I32") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}

// TestReportLayoutMismatch: an AWQ config over float weights names the
// stored layout in each missing tensor's note.
func TestReportLayoutMismatch(t *testing.T) {
	dir := gen(t, synth.Options{DType: "f16"})
	editConfig(t, dir, func(c *config.Config) {
		zp := true
		c.QuantizationConfig = &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: 64, ZeroPoint: &zp, Version: "gemm"}
	})
	r := report(t, dir)
	if r.OK() || r.Counts[checkpoint.Missing] != 14*3 || r.Counts[checkpoint.Unexpected] != 14 {
		t.Fatalf("counts %v", r.Counts)
	}
	if s := status(r, "model.layers.0.self_attn.q_proj.qweight"); !strings.Contains(s.Note, "stores it unquantized") {
		t.Errorf("note %q", s.Note)
	}
}

func TestReportArchitectureDropsHeads(t *testing.T) {
	dir := gen(t, synth.Options{})
	editConfig(t, dir, func(c *config.Config) { c.Architectures = []string{"Qwen3ForCausalLM"} })
	r := report(t, dir)
	if r.OK() || !strings.Contains(r.Diagnosis, "silently drop") {
		t.Errorf("diagnosis %q", r.Diagnosis)
	}
}

func TestReportCausalLMWithoutLMHead(t *testing.T) {
	dir := gen(t, synth.Options{Noesis: true})
	rewrite(t, dir, func(ts []*safetensors.Tensor) []*safetensors.Tensor {
		return slices.DeleteFunc(ts, func(x *safetensors.Tensor) bool { return x.Name == "lm_head.weight" })
	})
	r := report(t, dir)
	for _, f := range []string{"plain Qwen3 checkpoint", "cannot do stream safety classification", "tie_word_embeddings is false but there is no lm_head.weight"} {
		if !strings.Contains(r.Diagnosis, f) {
			t.Errorf("diagnosis lacks %q: %s", f, r.Diagnosis)
		}
	}
}

func TestReportGuardWithoutHeads(t *testing.T) {
	dir := gen(t, synth.Options{})
	rewrite(t, dir, func(ts []*safetensors.Tensor) []*safetensors.Tensor {
		return slices.DeleteFunc(ts, func(x *safetensors.Tensor) bool { return slices.Contains(checkpoint.HeadNames, x.Name) })
	})
	r := report(t, dir)
	if r.OK() || !strings.Contains(r.Diagnosis, "none of the 8 guard head tensors exist") || r.Counts[checkpoint.Missing] != 8 {
		t.Errorf("diagnosis %q counts %v", r.Diagnosis, r.Counts)
	}
}

func TestReportBadConfig(t *testing.T) {
	dir := gen(t, synth.Options{})
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"hidden_size": "big"`), 0o644)
	r := report(t, dir)
	if r.OK() || problem(r, "config") == "" || r.Counts[checkpoint.Unchecked] != 32 {
		t.Errorf("counts %v problems %q", r.Counts, r.Problems)
	}
	os.Remove(filepath.Join(dir, "config.json"))
	if r := report(t, dir); problem(r, "config.json") == "" {
		t.Errorf("problems %q", r.Problems)
	}
	if _, err := checkpoint.Report(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing folder accepted")
	}
}

func TestReportJSON(t *testing.T) {
	r := report(t, gen(t, synth.Options{}))
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Counts  map[string]int `json:"counts"`
		Tensors []struct {
			Name, Status string
		} `json:"tensors"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Counts["USED"] != 32 || back.Tensors[0].Status != "USED" {
		t.Errorf("json %s", b[:200])
	}
}

// TestSampleRandomInit checks the heuristic's thresholds on built tensors:
// a Gaussian init is flagged; heavy-tailed rows with varied norms, as in
// trained embeddings, are not.
func TestSampleRandomInit(t *testing.T) {
	const rows, cols = 4096, 256
	build := func(val func(r, c int) float32) *safetensors.Tensor {
		d := make([]byte, rows*cols*2)
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				binary.LittleEndian.PutUint16(d[2*(r*cols+c):], half.F32ToBF16(val(r, c)))
			}
		}
		return &safetensors.Tensor{Name: "lm_head.weight", DType: safetensors.BF16, Shape: []int{rows, cols}, Data: d}
	}
	// Deterministic pseudo-Gaussian: sum of 12 LCG uniforms.
	state := uint32(1)
	next := func() float32 {
		state = state*1664525 + 1013904223
		return float32(state>>8) / (1 << 24)
	}
	gauss := func() float32 {
		var s float32
		for range 12 {
			s += next()
		}
		return s - 6
	}
	s, err := checkpoint.SampleRandomInit(build(func(r, c int) float32 { return 0.02 * gauss() }), 64, 32)
	if err != nil {
		t.Fatal(err)
	}
	if !s.LooksRandomInit() || s.SampledRows != 2048 || s.Std < 0.019 || s.Std > 0.021 {
		t.Errorf("gaussian: %+v", s)
	}
	// Student-t-like tails (Gaussian / sqrt of a positive variable) with
	// row scales between 0.5 and 1.5.
	s, err = checkpoint.SampleRandomInit(build(func(r, c int) float32 {
		scale := 0.5 + float32(r%97)/96
		v := next() + 0.05
		return 0.02 * scale * gauss() / v
	}), 64, 32)
	if err != nil {
		t.Fatal(err)
	}
	if s.LooksRandomInit() || s.ExcessKurtosis < 1 || s.RowNormCV < 0.2 {
		t.Errorf("trained-like: %+v", s)
	}
	if _, err := checkpoint.SampleRandomInit(&safetensors.Tensor{Name: "x", DType: safetensors.I32, Shape: []int{2, 2}, Data: make([]byte, 16)}, 1, 1); err == nil {
		t.Error("I32 accepted")
	}
	if _, err := checkpoint.SampleRandomInit(&safetensors.Tensor{Name: "x", DType: safetensors.F32, Shape: []int{2, 2}, Data: make([]byte, 8)}, 1, 1); err == nil {
		t.Error("short data accepted")
	}
}

func TestReportQuantizedHead(t *testing.T) {
	dir := gen(t, synth.Options{DType: "awq"})
	rewrite(t, dir, func(ts []*safetensors.Tensor) []*safetensors.Tensor {
		for _, x := range ts {
			if x.Name == "risk_level_category_pre.weight" { // [32, 64] F16: as many bytes as I32 [64, 16]
				x.Name, x.DType, x.Shape = "risk_level_category_pre.qweight", safetensors.I32, []int{64, 16}
			}
		}
		return ts
	})
	r := report(t, dir)
	if r.OK() || r.Diagnosis != "" {
		t.Fatalf("diagnosis %q", r.Diagnosis)
	}
	if s := status(r, "risk_level_category_pre.weight"); s.Status != checkpoint.Missing || !strings.Contains(s.Note, "must stay in full precision") {
		t.Errorf("head row %+v", s)
	}
}

// TestReportConfigBounds: a config field beyond its limit is a problem
// naming the field, the value and the limit.
func TestReportConfigBounds(t *testing.T) {
	dir := gen(t, synth.Options{})
	editConfig(t, dir, func(c *config.Config) { c.MaxPositionEmbeddings = 2000000000 })
	r := report(t, dir)
	if r.OK() || problem(r, "config.json: max_position_embeddings 2000000000 exceeds the limit 1048576") == "" {
		t.Errorf("problems %q", r.Problems)
	}
}
