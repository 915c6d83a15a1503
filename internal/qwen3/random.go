package qwen3

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

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
	if cfg.IsAWQ() {
		return nil, fmt.Errorf("random weights: AWQ configs are not supported; use gen-model --dtype awq")
	}
	// The tensor list is the strict load report's: one definition of what a
	// guard model holds.
	var names []string
	var shapes [][]int
	for _, e := range checkpoint.Expected(cfg) {
		if e.Optional {
			continue
		}
		if slices.Contains(e.Shape, checkpoint.Unknown) {
			return nil, fmt.Errorf("random weights: the config does not fix the shape of %s", e.Name)
		}
		names, shapes = append(names, e.Name), append(shapes, e.Shape)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("random weights: the config has non-positive sizes")
	}
	src := make(MapSource, len(names))
	var mu sync.Mutex
	kernels.ParallelFor(len(names), kernels.Threads(), func(_, i int) {
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
