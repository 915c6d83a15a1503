package qwen3

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// TensorShapes lists every tensor a guard model with config cfg has, with
// its shape, in checkpoint order.
func TensorShapes(cfg *config.Config) ([]string, [][]int, error) {
	labels, err := cfg.Labels()
	if err != nil {
		return nil, nil, err
	}
	H, hd, I, G := cfg.HiddenSize, cfg.HeadDim, cfg.IntermediateSize, cfg.GuardInnerSize
	qd, kvd := cfg.NumAttentionHeads*hd, cfg.NumKeyValueHeads*hd
	var names []string
	var shapes [][]int
	add := func(name string, shape ...int) {
		names = append(names, name)
		shapes = append(shapes, shape)
	}
	add("model.embed_tokens.weight", cfg.VocabSize, H)
	for i := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", H)
		add(p+"self_attn.q_proj.weight", qd, H)
		add(p+"self_attn.k_proj.weight", kvd, H)
		add(p+"self_attn.v_proj.weight", kvd, H)
		add(p+"self_attn.o_proj.weight", H, qd)
		add(p+"self_attn.q_norm.weight", hd)
		add(p+"self_attn.k_norm.weight", hd)
		add(p+"post_attention_layernorm.weight", H)
		add(p+"mlp.gate_proj.weight", I, H)
		add(p+"mlp.up_proj.weight", I, H)
		add(p+"mlp.down_proj.weight", H, I)
	}
	add("model.norm.weight", H)
	add("risk_level_category_pre.weight", G, H)
	add("risk_level_category_layernorm.weight", G)
	add("risk_level_head.weight", len(labels.ResponseRisk), G)
	add("category_head.weight", len(labels.ResponseCategory), G)
	add("query_risk_level_category_pre.weight", G, H)
	add("query_risk_level_category_layernorm.weight", G)
	add("query_risk_level_head.weight", len(labels.QueryRisk), G)
	add("query_category_head.weight", len(labels.QueryCategory), G)
	return names, shapes, nil
}

// RandomSource builds every tensor of a guard model with config cfg in
// memory, in dtype (F32, BF16 or F16), from seed: matrices uniform with
// variance 1/in (activations keep their scale through the layers), norm
// weights 1±0.1. Each tensor's values depend only on the seed and its name,
// so they do not change when other tensors are added. For benchmarks and
// tests; it is not the gen-model file format.
func RandomSource(cfg *config.Config, dtype safetensors.DType, seed uint64) (MapSource, error) {
	switch dtype {
	case safetensors.F32, safetensors.BF16, safetensors.F16:
	default:
		return nil, fmt.Errorf("random weights: dtype %s not supported (want F32, BF16 or F16)", dtype)
	}
	names, shapes, err := TensorShapes(cfg)
	if err != nil {
		return nil, err
	}
	src := make(MapSource, len(names))
	var mu sync.Mutex
	parallelFor(len(names), kernels.Threads(), func(_, i int) {
		t := randomTensor(names[i], shapes[i], dtype, seed)
		mu.Lock()
		src[names[i]] = t
		mu.Unlock()
	})
	return src, nil
}

func randomTensor(name string, shape []int, dtype safetensors.DType, seed uint64) *safetensors.Tensor {
	h := fnv.New64a()
	h.Write([]byte(name))
	x := rand.New(rand.NewPCG(seed, h.Sum64())).Uint64() | 1
	n := 1
	for _, d := range shape {
		n *= d
	}
	// value = center + width·u with u uniform in [-1, 1): norm weights
	// 1±0.1, matrices with variance 1/in.
	center, width := float32(0), float32(math.Sqrt(3/float64(shape[len(shape)-1])))
	if len(shape) == 1 {
		center, width = 1, 0.1
	}
	next := func() float32 {
		// xorshift64: fast enough for the billions of values of an
		// 8B-class build, and plenty random for benchmarks and tests.
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return center + width*(float32(x>>40)*(1.0/(1<<23))-1)
	}
	data := make([]byte, n*dtype.Size())
	switch dtype {
	case safetensors.F32:
		for i := 0; i+4 <= len(data); i += 4 {
			binary.LittleEndian.PutUint32(data[i:], math.Float32bits(next()))
		}
	case safetensors.BF16:
		for i := 0; i+2 <= len(data); i += 2 {
			binary.LittleEndian.PutUint16(data[i:], half.F32ToBF16(next()))
		}
	default:
		for i := 0; i+2 <= len(data); i += 2 {
			binary.LittleEndian.PutUint16(data[i:], half.F32ToF16(next()))
		}
	}
	return &safetensors.Tensor{Name: name, DType: dtype, Shape: append([]int{}, shape...), Data: data}
}
