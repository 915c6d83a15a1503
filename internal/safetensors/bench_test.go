package safetensors

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// modelSpecs lists tensors shaped like a Qwen3 decoder stack (hidden h,
// ffn 3h) with the given number of layers, in BF16.
func modelSpecs(layers, h int) []TensorSpec {
	specs := []TensorSpec{{Name: "model.embed_tokens.weight", DType: BF16, Shape: []int{151936, h}}}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		for _, s := range []struct {
			n     string
			shape []int
		}{
			{"input_layernorm.weight", []int{h}},
			{"self_attn.q_proj.weight", []int{h, h}},
			{"self_attn.k_proj.weight", []int{h / 4, h}},
			{"self_attn.v_proj.weight", []int{h / 4, h}},
			{"self_attn.o_proj.weight", []int{h, h}},
			{"self_attn.q_norm.weight", []int{128}},
			{"self_attn.k_norm.weight", []int{128}},
			{"post_attention_layernorm.weight", []int{h}},
			{"mlp.gate_proj.weight", []int{3 * h, h}},
			{"mlp.up_proj.weight", []int{3 * h, h}},
			{"mlp.down_proj.weight", []int{h, 3 * h}},
		} {
			specs = append(specs, TensorSpec{Name: p + s.n, DType: BF16, Shape: s.shape})
		}
	}
	return append(specs, TensorSpec{Name: "model.norm.weight", DType: BF16, Shape: []int{h}})
}

// sparseModelDir lays specs out over shards of about shardBytes each,
// writing real headers and index but leaving the data as file holes, so a
// many-gigabyte folder costs no disk.
func sparseModelDir(tb testing.TB, specs []TensorSpec, shardBytes int64) (dir string, total int64) {
	tb.Helper()
	dir = tb.TempDir()
	var shards [][]TensorSpec
	var cur []TensorSpec
	var size int64
	for _, s := range specs {
		n, _ := byteSize(s.DType, s.Shape)
		if size > 0 && size+n > shardBytes {
			shards, cur, size = append(shards, cur), nil, 0
		}
		cur, size = append(cur, s), size+n
	}
	shards = append(shards, cur)
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		tensors, err := layout(sh)
		if err != nil {
			tb.Fatal(err)
		}
		hdr, err := encodeHeader(map[string]string{"format": "pt"}, tensors)
		if err != nil {
			tb.Fatal(err)
		}
		dataLen := tensors[len(tensors)-1].End
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
		p := writeTemp(tb, dir, name, append(b, hdr...))
		if err := os.Truncate(p, int64(len(b)+len(hdr))+dataLen); err != nil {
			tb.Fatal(err)
		}
		for _, t := range tensors {
			weightMap[t.Name] = name
		}
		total += dataLen
	}
	if err := WriteIndex(dir, weightMap, total, nil); err != nil {
		tb.Fatal(err)
	}
	return dir, total
}

// TestOpenDirSparse16GB opens a folder shaped like a 16 GB checkpoint
// (Qwen3-8B-sized BF16 tensors in 4 GB shards, all holes) and checks that
// opening reads only headers: resident memory barely moves.
func TestOpenDirSparse16GB(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a large sparse folder")
	}
	dir, total := sparseModelDir(t, modelSpecs(36, 4096), 4<<30)
	if total < 14<<30 {
		t.Fatalf("folder holds %d bytes, want about 16 GB", total)
	}
	before := residentBytes(t)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after := residentBytes(t)
	// Mapping 16 GB must not fault it in; 64 MiB is slack for the Go
	// runtime and headers (about 60 KB each), not for tensor data.
	if before > 0 && after-before > 64<<20 {
		t.Errorf("opening grew resident memory by %d MiB", (after-before)>>20)
	}
	if got := len(s.Names()); got != 1+36*11+1 {
		t.Errorf("got %d tensors", got)
	}
	last, err := s.Tensor("model.norm.weight")
	if err != nil {
		t.Fatal(err)
	}
	v, err := last.Float32s() // a hole reads as zeros
	if err != nil || len(v) != 4096 || v[4095] != 0 {
		t.Errorf("model.norm.weight = %d values, %v", len(v), err)
	}
}

// residentBytes reads VmRSS on Linux; 0 elsewhere (the check is skipped).
func residentBytes(t *testing.T) int64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	return 0
}

func BenchmarkOpenDir(b *testing.B) {
	for _, c := range []struct {
		name   string
		specs  []TensorSpec
		shards int64
	}{
		{"0.6B-like_single", modelSpecs(28, 1024), 1 << 40},
		{"8B-like_16GB_4shards", modelSpecs(36, 4096), 4 << 30},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir, _ := sparseModelDir(b, c.specs, c.shards)
			b.ReportAllocs()
			for b.Loop() {
				s, err := OpenDir(dir)
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

func BenchmarkParseHeader(b *testing.B) {
	tensors, err := layout(modelSpecs(36, 4096))
	if err != nil {
		b.Fatal(err)
	}
	hdr, err := encodeHeader(map[string]string{"format": "pt"}, tensors)
	if err != nil {
		b.Fatal(err)
	}
	dataLen := tensors[len(tensors)-1].End
	b.SetBytes(int64(len(hdr)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(hdr, dataLen); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFloat32sBF16(b *testing.B) {
	t := &Tensor{Name: "x", DType: BF16, Shape: []int{1 << 20}, Data: make([]byte, 2<<20)}
	b.SetBytes(int64(len(t.Data)))
	for b.Loop() {
		if _, err := t.Float32s(); err != nil {
			b.Fatal(err)
		}
	}
}
