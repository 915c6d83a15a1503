package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// miniFolder writes a complete AWQ guard folder at the tiny shapes but with
// a 256-token vocabulary and zero weights: cheap enough for every fuzz
// worker to build (Report reads headers only, so the values do not matter).
func miniFolder(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	cfg, err := config.Preset("tiny")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.VocabSize = 256
	zp := true
	cfg.QuantizationConfig = &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: 64, ZeroPoint: &zp, Version: "gemm",
		ModulesToNotConvert: checkpoint.HeadModules()}
	if err := cfg.Write(dir); err != nil {
		tb.Fatal(err)
	}
	var ts []*safetensors.Tensor
	for _, e := range checkpoint.Expected(cfg) {
		if e.Optional {
			continue
		}
		n := e.DTypes[0].Size()
		for _, d := range e.Shape {
			n *= d
		}
		ts = append(ts, &safetensors.Tensor{Name: e.Name, DType: e.DTypes[0], Shape: e.Shape, Data: make([]byte, n)})
	}
	if err := safetensors.WriteFile(filepath.Join(dir, safetensors.SingleFile), nil, ts); err != nil {
		tb.Fatal(err)
	}
	for _, name := range checkpoint.TokenizerFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// FuzzReportConfig feeds arbitrary config.json bytes to config.Parse and to
// Report over a fixed checkpoint: neither may panic, and a report must not
// be OK unless the config declares a guard model.
func FuzzReportConfig(f *testing.F) {
	dir := miniFolder(f)
	if r, err := checkpoint.Report(dir); err != nil || !r.OK() {
		f.Fatalf("fixture not OK: %v %+v", err, r)
	}
	orig, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(orig)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_hidden_layers":2}`))
	f.Add([]byte(`{"num_hidden_layers": 1024, "hidden_size": 1, "vocab_size": 1, "intermediate_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 1}`))
	f.Add([]byte(`{"quantization_config": {"quant_method": "awq", "group_size": 0, "bits": 4}, "hidden_size": -8}`))
	f.Add([]byte(`{"response_risk_level_map": {"0": "Safe", "5": "x"}, "guard_inner_size": 1e9}`))
	f.Add([]byte(`[1, 2`))
	f.Add(bytes.Replace(orig, []byte(`"max_position_embeddings": 8192`), []byte(`"max_position_embeddings": 2000000000`), 1))
	f.Add(bytes.Replace(orig, []byte(`"num_hidden_layers": 2`), []byte(`"num_hidden_layers": 1025`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := config.Parse(b); err == nil {
			c.Validate(true)
			c.Validate(false)
			checkpoint.Expected(c)
			checkpoint.AWQShapeProblems(c)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := checkpoint.Report(dir)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK() && !r.Guard {
			t.Fatalf("non-guard config accepted: %s", b)
		}
	})
}

// FuzzReportHeader feeds Report an arbitrary safetensors header over a
// (sparse) data buffer of any length, next to a valid config.json: tensor
// names, dtypes, shapes and __metadata__ all come from the fuzzer, and
// an lm_head of any shape reaches the random-init sample. Report must not
// fail or panic, must classify every tensor the file holds exactly once,
// must not allocate by what the header claims (64 MiB at most), and its
// text must carry no control character but newlines: names are the
// checkpoint's, and reach a terminal.
func FuzzReportHeader(f *testing.F) {
	dir := miniFolder(f)
	path := filepath.Join(dir, safetensors.SingleFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(orig)
	f.Add(orig[8:8+n], uint64(len(orig))-8-n)
	f.Add([]byte(`{"\u001b[2J\u001b]0;x\u0007model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"generator":"\u001b[31m","preset":"\u009b2J"}}`), uint64(4))
	f.Add([]byte(`{"lm_head.weight":{"dtype":"F32","shape":[256,64],"data_offsets":[0,65536]}}`), uint64(65536))
	f.Add([]byte(`{"lm_head.weight":{"dtype":"BF16","shape":[1,8589934592],"data_offsets":[0,17179869184]}}`), uint64(17179869184))
	f.Add([]byte(`{"lm_head.weight":{"dtype":"F32","shape":[32,4194304],"data_offsets":[0,536870912]}}`), uint64(536870912))
	f.Add([]byte(`{"model.norm.weight":{"dtype":"I8","shape":[64],"data_offsets":[0,64]},"x\u202e":{"dtype":"U8","shape":[0],"data_offsets":[64,64]}}`), uint64(64))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen uint64) {
		dataLen %= 1 << 36 // sparse: no disk used
		var pre [8]byte
		binary.LittleEndian.PutUint64(pre[:], uint64(len(hdr)))
		if err := os.WriteFile(path, append(pre[:], hdr...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 8+int64(len(hdr))+int64(dataLen)); err != nil {
			t.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		r, err := checkpoint.Report(dir)
		runtime.ReadMemStats(&m1)
		if err != nil {
			t.Fatal(err)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 64<<20+10*uint64(len(hdr)) {
			t.Fatalf("Report allocated %d bytes for a %d-byte header", alloc, len(hdr))
		}
		if r.OK() && !r.Guard {
			t.Fatal("non-guard report OK")
		}
		total := 0
		for _, n := range r.Counts {
			total += n
		}
		if total != len(r.Tensors) {
			t.Fatalf("counts %v for %d rows", r.Counts, len(r.Tensors))
		}
		// Every tensor of the file is one row that is not MISSING.
		if sf, err := safetensors.Open(path); err == nil {
			var rows []string
			for _, tr := range r.Tensors {
				if tr.Status != checkpoint.Missing {
					rows = append(rows, tr.Name)
				}
			}
			var names []string
			for _, ti := range sf.Header().Tensors {
				names = append(names, ti.Name)
			}
			sf.Close()
			slices.Sort(rows)
			slices.Sort(names)
			if !slices.Equal(rows, names) {
				t.Fatalf("report rows %q, file tensors %q", rows, names)
			}
		} else if len(r.Tensors) > 0 && r.Counts[checkpoint.Missing] != len(r.Tensors) {
			t.Fatalf("unreadable file (%v) but tensors reported: %+v", err, r.Tensors)
		}
		var out bytes.Buffer
		if err := r.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		for _, c := range out.String() {
			if c != '\n' && !strconv.IsPrint(c) {
				t.Fatalf("text report holds %U:\n%q", c, out.String())
			}
		}
		for _, p := range append(r.Problems, r.Diagnosis) {
			if strings.ContainsFunc(p, func(c rune) bool { return !strconv.IsPrint(c) }) {
				t.Fatalf("problem holds a control character: %q", p)
			}
		}
	})
}
