package qwen3

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

func cloneSource(src MapSource) MapSource {
	c := make(MapSource, len(src))
	for k, v := range src {
		c[k] = v
	}
	return c
}

func TestLoadRefusesBrokenCheckpoints(t *testing.T) {
	tm := tiny(t, safetensors.F32)
	for _, tc := range []struct {
		name   string
		mutate func(MapSource)
		want   string
	}{
		{"missing head", func(s MapSource) { delete(s, "query_category_head.weight") },
			`tensor "query_category_head.weight" is missing`},
		{"missing layer norm", func(s MapSource) { delete(s, "model.layers.1.self_attn.k_norm.weight") },
			`tensor "model.layers.1.self_attn.k_norm.weight" is missing`},
		{"wrong head shape", func(s MapSource) {
			s["category_head.weight"] = &safetensors.Tensor{Name: "category_head.weight", DType: safetensors.F32,
				Shape: []int{9, 32}, Data: make([]byte, 9*32*4)}
		}, `tensor "category_head.weight" has shape [9 32], want [8 32]`},
		{"unused tensor", func(s MapSource) {
			s["model.layers.2.mlp.up_proj.weight"] = s["model.layers.1.mlp.up_proj.weight"]
		}, "tensors not used by a Qwen3Guard-Stream model: model.layers.2.mlp.up_proj.weight"},
		{"integer weights", func(s MapSource) {
			s["model.layers.0.mlp.up_proj.weight"] = &safetensors.Tensor{Name: "model.layers.0.mlp.up_proj.weight",
				DType: safetensors.I32, Shape: []int{128, 64}, Data: make([]byte, 128*64*4)}
		}, `dtype I32 is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := cloneSource(tm.src)
			tc.mutate(src)
			_, err := Load(src, tm.cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// lm_head is ignored: the guard has no language-model head.
	src := cloneSource(tm.src)
	src["lm_head.weight"] = src["model.embed_tokens.weight"]
	if _, err := Load(src, tm.cfg, Options{}); err != nil {
		t.Fatalf("lm_head.weight should be ignored: %v", err)
	}
}

// TestNormWeightsMatter replaces one norm weight (q_norm of layer 1, the
// easiest to forget) by ones and expects different outputs: a forward that
// ignored the weight would not notice.
func TestNormWeightsMatter(t *testing.T) {
	tm := tiny(t, safetensors.F32)
	ids := testIDs(6, 3)
	base, err := tm.m.Forward([]Sequence{{Cache: tm.m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.layers.1.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight",
		"model.layers.1.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
		"risk_level_category_layernorm.weight", "query_risk_level_category_layernorm.weight"} {
		src := cloneSource(tm.src)
		old := src[name]
		ones := make([]byte, len(old.Data))
		for i := 0; i < len(ones); i += 4 {
			binary.LittleEndian.PutUint32(ones[i:], math.Float32bits(1))
		}
		src[name] = &safetensors.Tensor{Name: name, DType: old.DType, Shape: old.Shape, Data: ones}
		m, err := Load(src, tm.cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		a, b := flatten(base...), flatten(out...)
		same := true
		for i := range a {
			if a[i] != b[i] {
				same = false
				break
			}
		}
		if same {
			t.Errorf("%s replaced by ones: outputs unchanged", name)
		}
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m := tiny(t, safetensors.F32).m
	other := tiny(t, safetensors.BF16).m
	c := m.NewCache()
	if _, err := m.Forward([]Sequence{{Cache: c, IDs: []int{1, 2}}}, ForwardOptions{}); err != nil {
		t.Fatal(err)
	}
	long := make([]int, m.MaxPositions-1)
	for _, tc := range []struct {
		name string
		seqs []Sequence
		want string
	}{
		{"id too large", []Sequence{{Cache: c, IDs: []int{5, 151936}}}, "token 1: id 151936 outside the vocabulary [0, 151936)"},
		{"negative id", []Sequence{{Cache: c, IDs: []int{-1}}}, "id -1 outside"},
		{"too long", []Sequence{{Cache: c, IDs: long}}, "8193 tokens (2 cached + 8191 new) exceed max_position_embeddings 8192"},
		{"nil cache", []Sequence{{IDs: []int{1}}}, "nil cache"},
		{"foreign cache", []Sequence{{Cache: other.NewCache(), IDs: []int{1}}}, "another model"},
		{"duplicate cache", []Sequence{{Cache: c, IDs: []int{1}}, {Cache: c, IDs: []int{2}}}, "twice"},
	} {
		_, err := m.Forward(tc.seqs, ForwardOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if c.Len() != 2 {
			t.Fatalf("%s: a rejected forward changed the cache length to %d", tc.name, c.Len())
		}
	}
}

func TestCacheGrowsAndReportsBytes(t *testing.T) {
	m := tiny(t, safetensors.F32).m
	c := m.NewCache()
	if c.Bytes() != 0 {
		t.Fatalf("new cache holds %d bytes", c.Bytes())
	}
	ids := testIDs(200, 4)
	if _, err := m.Forward([]Sequence{{Cache: c, IDs: ids[:100]}}, ForwardOptions{}); err != nil {
		t.Fatal(err)
	}
	// tiny: 2 layers × 2 (k, v) × 2 kv heads × 16 dims × 4 bytes = 512 B per position.
	if got := m.BytesPerPosition(); got != 512 {
		t.Fatalf("BytesPerPosition = %d, want 512", got)
	}
	if c.Cap() != 128 || c.Bytes() != 128*512 {
		t.Fatalf("after 100 tokens: cap %d, %d bytes", c.Cap(), c.Bytes())
	}
	if _, err := m.Forward([]Sequence{{Cache: c, IDs: ids[100:]}}, ForwardOptions{}); err != nil {
		t.Fatal(err)
	}
	// 128 + max(128, 128/4) = 256 positions.
	if c.Len() != 200 || c.Cap() != 256 {
		t.Fatalf("after 200 tokens: len %d cap %d", c.Len(), c.Cap())
	}
	// Rounded to blocks of 64, then growth by a quarter: 4000 -> 4032;
	// 4032 + 1008 = 5040 -> 5056.
	if err := c.Reserve(4000); err != nil || c.Cap() != 4032 {
		t.Fatalf("after Reserve(4000): cap %d, %v", c.Cap(), err)
	}
	if err := c.Reserve(4033); err != nil || c.Cap() != 5056 {
		t.Fatalf("after Reserve(4033): cap %d, %v", c.Cap(), err)
	}
	// Never beyond max_position_embeddings.
	if err := c.Reserve(8000); err != nil || c.Cap() != 8000 {
		t.Fatalf("after Reserve(8000): cap %d, %v", c.Cap(), err)
	}
	if err := c.Reserve(8001); err != nil || c.Cap() != 8192 {
		t.Fatalf("after Reserve(8001): cap %d, %v", c.Cap(), err)
	}
	if err := c.Reserve(8193); err == nil {
		t.Fatal("Reserve(8193) succeeded")
	}
	c.Release()
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Fatalf("after Release: len %d, %d bytes", c.Len(), c.Bytes())
	}
}
