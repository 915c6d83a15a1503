package quantize

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// copyModel copies a generated folder so a test can damage it.
func copyModel(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "m")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// editJSON rewrites a JSON object file.
func editJSON(t *testing.T, path string, edit func(m map[string]any)) {
	t.Helper()
	m := readJSON(t, path)
	edit(m)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readJSON reads a JSON object file.
func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// poisonFirst writes a NaN over the first value of tensor name (bf16 or f16).
func poisonFirst(t *testing.T, dir, name string) {
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
		if n == name {
			switch x.DType {
			case safetensors.BF16:
				x.Data[0], x.Data[1] = 0xc0, 0x7f
			case safetensors.F16:
				x.Data[0], x.Data[1] = 0x00, 0x7e
			default:
				t.Fatalf("%s is %s", n, x.DType)
			}
		}
		ts = append(ts, x)
	}
	meta := f.Metadata()
	f.Close()
	if err := safetensors.WriteFile(path, meta, ts); err != nil {
		t.Fatal(err)
	}
}

// quantizeNoPanic runs Quantize, turning a panic into an error.
func quantizeNoPanic(o Options) (res *Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("PANIC: %v", r)
		}
	}()
	return Quantize(o)
}

// A failure after the output writer starts (here a NaN in a source
// projection, which toMat refuses) is returned as that error, and the
// half-written model.safetensors is removed so that a re-run is not refused
// ("already holds a checkpoint"). The cleanup once read the named result,
// nil after an error return, and panicked.
func TestQuantizeFailureAfterWriterStartsIsAnErrorNotAPanic(t *testing.T) {
	src := copyModel(t, outlierModel(t))
	poisonFirst(t, src, "model.layers.0.mlp.up_proj.weight")
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	o.SkipEval = true
	_, err := quantizeNoPanic(o)
	if err == nil || strings.HasPrefix(err.Error(), "PANIC") || !strings.Contains(err.Error(), "up_proj") {
		t.Errorf("Quantize error = %v, want the NaN in model.layers.0.mlp.up_proj.weight reported", err)
	}
	if _, serr := os.Stat(filepath.Join(o.Out, safetensors.SingleFile)); serr == nil {
		t.Errorf("a half-written %s was left in %s", safetensors.SingleFile, o.Out)
	}
}

// A source config written by transformers >= 4.56 carries "dtype" besides
// "torch_dtype" (the real-config fixture has both), and transformers reads
// `dtype` first: both must say float16 in the INT4 bundle, or it is loaded
// as bfloat16.
func TestQuantizeConfigDtypeAgreesWithTorchDtype(t *testing.T) {
	src := copyModel(t, outlierModel(t))
	editJSON(t, filepath.Join(src, "config.json"), func(m map[string]any) { m["dtype"] = "bfloat16" })
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	o.SkipEval = true
	if _, err := quantizeNoPanic(o); err != nil {
		t.Fatal(err)
	}
	m := readJSON(t, filepath.Join(o.Out, "config.json"))
	if d, ok := m["dtype"]; ok && d != m["torch_dtype"] {
		t.Errorf("output config.json: dtype %v, torch_dtype %v: the two disagree", d, m["torch_dtype"])
	}
}

// addRemoteCode gives dir's config the auto_map of Qwen3Guard-Stream and the
// two Python files it names (the real repositories ship them).
func addRemoteCode(t *testing.T, dir string) {
	t.Helper()
	editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) {
		m["auto_map"] = map[string]any{"AutoConfig": "configuration_qwen3.Qwen3Config", "AutoModel": "modeling_qwen3_guard.Qwen3ForGuardModel"}
	})
	for _, f := range []string{"configuration_qwen3.py", "modeling_qwen3_guard.py"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("# remote code\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkAutoMapResolves checks that every module auto_map names is in dir.
func checkAutoMapResolves(t *testing.T, dir string) {
	t.Helper()
	m := readJSON(t, filepath.Join(dir, "config.json"))
	am, ok := m["auto_map"].(map[string]any)
	if !ok {
		t.Fatalf("output config.json has no auto_map: %v", m["auto_map"])
	}
	for k, v := range am {
		mod, _, _ := strings.Cut(v.(string), ".")
		if _, err := os.Stat(filepath.Join(dir, mod+".py")); err != nil {
			t.Errorf("auto_map %s names %s, but %s.py is not in the output folder: AutoModel.from_pretrained(trust_remote_code=True) fails", k, v, mod)
		}
	}
}

// quantize keeps the source's auto_map (custom-code classes) in config.json,
// so it copies the modeling/configuration .py files it names, or
// transformers could not load the bundle.
func TestQuantizeCopiesTheCodeAutoMapNames(t *testing.T) {
	src := copyModel(t, outlierModel(t))
	addRemoteCode(t, src)
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	o.SkipEval = true
	if _, err := quantizeNoPanic(o); err != nil {
		t.Fatal(err)
	}
	checkAutoMapResolves(t, o.Out)
}

// graft takes auto_map from --heads-from, and the code it names too.
func TestGraftCopiesTheCodeAutoMapNames(t *testing.T) {
	noesis := generated(t, "noesis", synth.Options{Noesis: true, Seed: 1})
	heads := copyModel(t, generated(t, "f16", synth.Options{DType: "f16", Seed: 1}))
	addRemoteCode(t, heads)
	out := filepath.Join(t.TempDir(), "g")
	if _, err := Graft(GraftOptions{Backbone: noesis, HeadsFrom: heads, Out: out}); err != nil {
		t.Fatal(err)
	}
	checkAutoMapResolves(t, out)
}

// graft rewrites the backbone's quantization_config through
// config.Quantization: keys it does not model (GPTQModel's meta — the
// quantizer's provenance — sym, desc_act, pack_dtype...) are kept.
func TestGraftKeepsBackboneQuantizationConfigKeys(t *testing.T) {
	noesis := copyModel(t, generated(t, "noesis", synth.Options{Noesis: true, Seed: 1}))
	heads := generated(t, "f16", synth.Options{DType: "f16", Seed: 1})
	editJSON(t, filepath.Join(noesis, "config.json"), func(m map[string]any) {
		q := m["quantization_config"].(map[string]any)
		q["meta"] = map[string]any{"quantizer": []any{"gptqmodel:4.0.0"}}
		q["sym"] = false
		q["desc_act"] = false
	})
	out := filepath.Join(t.TempDir(), "g")
	if _, err := Graft(GraftOptions{Backbone: noesis, HeadsFrom: heads, Out: out}); err != nil {
		t.Fatal(err)
	}
	q, _ := readJSON(t, filepath.Join(out, "config.json"))["quantization_config"].(map[string]any)
	for _, k := range []string{"meta", "sym", "desc_act"} {
		if _, ok := q[k]; !ok {
			t.Errorf("quantization_config.%s of the backbone was dropped: %v", k, q)
		}
	}
}

// A NaN in a guard head of the source is refused like one in any other
// tensor: the heads are copied unconverted, and once went through, the
// quality table showing KL NaN (and --json failing after the bundle was
// written, "json: unsupported value: NaN").
func TestQuantizeRefusesNaNInHead(t *testing.T) {
	src := copyModel(t, outlierModel(t))
	poisonFirst(t, src, "risk_level_head.weight")
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	o.SkipEval = true
	if _, err := quantizeNoPanic(o); err == nil || strings.HasPrefix(err.Error(), "PANIC") || !strings.Contains(err.Error(), "risk_level_head") {
		t.Errorf("Quantize error = %v, want a NaN in risk_level_head.weight refused", err)
	}
}

// An f16 source's embedding is copied as it is stored, so its values are
// checked on the way: a NaN is named as one, not as a value fp16 cannot
// hold.
func TestQuantizeRefusesNaNInF16Embedding(t *testing.T) {
	src := copyModel(t, generated(t, "f16", synth.Options{DType: "f16", Seed: 1}))
	poisonFirst(t, src, "model.embed_tokens.weight")
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	o.SkipEval = true
	_, err := quantizeNoPanic(o)
	if err == nil || !strings.Contains(err.Error(), "not a finite number") {
		t.Errorf("Quantize error = %v, want the NaN in the embedding refused as not a finite number", err)
	}
}
