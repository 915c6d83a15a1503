package quantize

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// conversations whose verdicts graft tests compare.
var graftConvos = [][]guard.Message{
	{{Role: "user", Content: "How do I bake bread?"}, {Role: "assistant", Content: "Mix flour, water, salt and yeast, knead, let it rise and bake."}},
	{{Role: "user", Content: "Tell me how to hurt someone."}, {Role: "assistant", Content: "I can't help with that."}},
}

// logitsAndVerdicts loads dir and returns every position's four logit
// vectors for the conversations, and their Moderate results.
func logitsAndVerdicts(t *testing.T, dir string) ([][]float32, []*guard.Result) {
	t.Helper()
	g, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	net := guardhook.Network(g)
	var logits [][]float32
	var results []*guard.Result
	for _, c := range graftConvos {
		chat, err := guardhook.Tokenizer(g).RenderChat(guardhook.ChatMessages(c))
		if err != nil {
			t.Fatal(err)
		}
		outs, err := net.Forward([]qwen3.Sequence{{Cache: net.NewCache(), IDs: chat.IDs}}, qwen3.ForwardOptions{})
		if err != nil {
			t.Fatal(err)
		}
		o := outs[0]
		for p := range chat.IDs {
			logits = append(logits, slices.Concat(o.Risk[p], o.Category[p], o.QueryRisk[p], o.QueryCategory[p]))
		}
		res, err := g.Moderate(context.Background(), c, nil)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	return logits, results
}

func sameOutputs(t *testing.T, what string, a, b [][]float32, ra, rb []*guard.Result) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d positions", what, len(a), len(b))
	}
	for p := range a {
		if !slices.Equal(a[p], b[p]) {
			t.Fatalf("%s: position %d logits differ:\n%v\n%v", what, p, a[p], b[p])
		}
	}
	for i := range ra {
		x, y := ra[i], rb[i]
		if x.Prompt.Risk != y.Prompt.Risk || x.FlaggedIndex != y.FlaggedIndex || len(x.Tokens) != len(y.Tokens) {
			t.Fatalf("%s: conversation %d verdicts differ: %+v vs %+v", what, i, x.Prompt, y.Prompt)
		}
		for j := range x.Tokens {
			if x.Tokens[j].Risk != y.Tokens[j].Risk || x.Tokens[j].Category != y.Tokens[j].Category {
				t.Fatalf("%s: conversation %d token %d: %+v vs %+v", what, i, j, x.Tokens[j], y.Tokens[j])
			}
		}
	}
}

// TestGraftNoesisReplica repairs the gen-model --noesis replica with the
// heads of the guard checkpoint it stands for. The replica is the seed's
// AWQ export with the heads dropped and a random lm_head added, so "the
// same model quantized directly" is gen-model --dtype awq with that seed
// (identical backbone tensors, heads kept): the grafted bundle must verify
// and give bit-identical logits and the same verdicts. The heads come from
// the F16 checkpoint of the seed, whose head bytes the AWQ export stores.
func TestGraftNoesisReplica(t *testing.T) {
	base := t.TempDir()
	noesis := generated(t, "noesis", synth.Options{Noesis: true, Seed: 1})
	guardDir := generated(t, "f16", synth.Options{DType: "f16", Seed: 1})
	direct := generated(t, "awq", synth.Options{DType: "awq", Seed: 1})
	out := filepath.Join(base, "grafted")
	res, err := Graft(GraftOptions{Backbone: noesis, HeadsFrom: guardDir, Out: out, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Report.OK() || !slices.Equal(res.Dropped, []string{"lm_head.weight"}) || len(res.Heads) != 8 || len(res.Checks) != 4 {
		t.Fatalf("result %+v", res)
	}
	t.Logf("checks: %q", res.Checks)
	cfg, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.IsGuard() || cfg.GuardInnerSize != 32 || len(cfg.QueryCategoryMap) != 9 ||
		!slices.Equal(cfg.QuantizationConfig.ModulesToNotConvert, checkpoint.HeadModules()) {
		t.Errorf("config %+v", cfg)
	}
	la, ra := logitsAndVerdicts(t, out)
	lb, rb := logitsAndVerdicts(t, direct)
	sameOutputs(t, "grafted vs direct", la, lb, ra, rb)

	// The folder is the one a graft writes again: refuse to overwrite.
	if _, err := Graft(GraftOptions{Backbone: noesis, HeadsFrom: guardDir, Out: out}); err == nil || !strings.Contains(err.Error(), "already holds a checkpoint") {
		t.Errorf("second graft into the same folder: %v", err)
	}
}

// TestGraftRealisticExport builds what a broken export of streamguard's own
// INT4 bundle looks like (heads dropped, random lm_head, causal-LM config)
// and grafts the BF16 source's heads back: the result must equal the bundle
// quantized directly, bit for bit in its logits.
func TestGraftRealisticExport(t *testing.T) {
	src := outlierModel(t)
	base := t.TempDir()
	direct := quantizedOutlier(t, AWQ).Out
	broken := filepath.Join(base, "broken")
	breakExport(t, direct, broken)
	rep, err := checkpoint.Report(broken)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(rep.Diagnosis, "streamguard graft") {
		t.Fatalf("broken export not diagnosed: %q", rep.Diagnosis)
	}
	out := filepath.Join(base, "grafted")
	if _, err := Graft(GraftOptions{Backbone: broken, HeadsFrom: src, Out: out}); err != nil {
		t.Fatal(err)
	}
	la, ra := logitsAndVerdicts(t, out)
	lb, rb := logitsAndVerdicts(t, direct)
	sameOutputs(t, "grafted vs direct", la, lb, ra, rb)
}

// breakExport copies an INT4 guard bundle the way the broken public export
// was made: Qwen3ForCausalLM config without guard fields, no heads, and a
// freshly initialised fp16 lm_head.
func breakExport(t *testing.T, from, to string) {
	t.Helper()
	set, err := safetensors.OpenDir(from)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	cfg, err := config.Load(from)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*safetensors.Tensor
	for _, n := range set.Names() {
		if slices.Contains(checkpoint.HeadNames, n) {
			continue
		}
		tt, err := set.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tt)
	}
	lm := make([]byte, 2*cfg.VocabSize*cfg.HiddenSize)
	x := uint32(12345)
	for i := 0; i < len(lm); i += 2 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		binary.LittleEndian.PutUint16(lm[i:], half.F32ToF16((float32(x%2001)/1000-1)*0.03))
	}
	ts = append(ts, &safetensors.Tensor{Name: "lm_head.weight", DType: safetensors.F16, Shape: []int{cfg.VocabSize, cfg.HiddenSize}, Data: lm})
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(to, "model.safetensors"), map[string]string{"format": "pt"}, ts); err != nil {
		t.Fatal(err)
	}
	cfg.Architectures = []string{"Qwen3ForCausalLM"}
	cfg.GuardInnerSize, cfg.NumRiskLevel, cfg.NumCategory, cfg.NumQueryRiskLevel, cfg.NumQueryCategory = 0, 0, 0, 0, 0
	cfg.ResponseRiskLevelMap, cfg.ResponseCategoryMap, cfg.QueryRiskLevelMap, cfg.QueryCategoryMap = nil, nil, nil, nil
	cfg.TieWordEmbeddings = false
	cfg.QuantizationConfig.ModulesToNotConvert = nil
	if err := cfg.Write(to); err != nil {
		t.Fatal(err)
	}
	if _, err := copySideFiles(to, from); err != nil {
		t.Fatal(err)
	}
}

// TestGraftRefuses: folders that do not belong together, or are not what
// graft repairs.
func TestGraftRefuses(t *testing.T) {
	base := t.TempDir()
	noesis := generated(t, "noesis", synth.Options{Noesis: true, Seed: 1})
	otherSeed := generated(t, "bf16-seed2", synth.Options{DType: "bf16", Seed: 2})
	sameSeed := generated(t, "bf16", synth.Options{DType: "bf16", Seed: 1})
	complete := generated(t, "awq", synth.Options{DType: "awq", Seed: 1})
	shallow := filepath.Join(base, "shallow")
	cfg, _ := config.Preset("tiny")
	cfg.NumHiddenLayers = 1
	writeRandomModel(t, shallow, cfg)
	for name, c := range map[string]struct {
		o    GraftOptions
		want string
	}{
		"other weights":  {GraftOptions{Backbone: noesis, HeadsFrom: otherSeed}, "was not quantized from this guard"},
		"other shape":    {GraftOptions{Backbone: noesis, HeadsFrom: shallow}, "num_hidden_layers 2 (backbone) vs 1"},
		"float backbone": {GraftOptions{Backbone: sameSeed, HeadsFrom: sameSeed}, "no AWQ quantization_config"},
		"has heads":      {GraftOptions{Backbone: complete, HeadsFrom: sameSeed}, "already holds guard head"},
		"headless guard": {GraftOptions{Backbone: noesis, HeadsFrom: noesis}, "not a complete Qwen3Guard-Stream model"},
	} {
		c.o.Out = filepath.Join(base, "out-"+strings.ReplaceAll(name, " ", "-"))
		if _, err := Graft(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
		if _, err := os.Stat(c.o.Out); !os.IsNotExist(err) {
			t.Errorf("%s: refused graft created %s", name, c.o.Out)
		}
	}
	// The bf16 guard of the replica's seed is accepted: its weights agree
	// within bf16 rounding.
	out := filepath.Join(base, "ok")
	if _, err := Graft(GraftOptions{Backbone: noesis, HeadsFrom: sameSeed, Out: out}); err != nil {
		t.Errorf("bf16 heads-from of the same seed: %v", err)
	}
}
