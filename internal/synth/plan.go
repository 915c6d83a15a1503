package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Distributions (all uniform unless stated; std σ):
//   - model.embed_tokens: σ = 0.05.
//   - every RMSNorm weight: uniform in [0.6, 1.4], never all ones, so a
//     loader that forgets a norm weight gives different numbers.
//   - Linear weights [out, in] (backbone and the two head pre-projections):
//     σ = 1/sqrt(in), keeping activations at a stable scale through the depth.
//   - guard head output layers [classes, G]: σ = 3/sqrt(G); after the
//     RMSNorm the logits then have σ ≈ 3, so argmaxes differ from position
//     to position and Safe/Unsafe/Controversial all occur.
//   - outlier channels (--outlier-channels K): K hidden channels, chosen from
//     the seed, are multiplied by OutlierFactor in the embedding columns and
//     in both per-layer input norms, giving the activation outliers AWQ is
//     designed around.
//   - AWQ: qweight codes uniform in 0..15, zero points 7 or 8, scales
//     s0·U[0.75, 1.25] with s0 = 1/sqrt(in·21.5·1.0208), so the dequantized
//     weight has σ ≈ 1/sqrt(in) like the float presets (E[(q−z)²] = 21.5,
//     E[U²] = 1.0208).
//   - --noesis lm_head: approximately Gaussian, σ = 0.02 (the HF
//     initializer_range), like the freshly initialised output layer of the
//     broken export.

// OutlierFactor scales the outlier channels.
const OutlierFactor = 20

const (
	embeddingStd  = 0.05
	normLo        = 0.6
	normHi        = 1.4
	classifierStd = 3.0
	lmHeadStd     = 0.02
	sqrt3         = 1.7320508075688772
)

// tensorPlan is one tensor to write and how to fill it.
type tensorPlan struct {
	spec  safetensors.TensorSpec
	shard int
	bytes int64
	fill  filler
}

// filler writes elements first, first+1, ... of a tensor into dst (a whole
// number of elements). scratch is per-worker space of at least
// len(dst)/2 float32s.
type filler interface {
	fill(dst []byte, first int64, scratch []float32)
}

// floatFill draws float values and encodes them as dtype.
type floatFill struct {
	key   uint64
	dtype safetensors.DType
	kind  floatDist
	a, b  float32 // symmetric: scale a; unitRange: lo a, width b; gauss: std a
	// boost, if set, multiplies column i%len(boost) by OutlierFactor where true.
	boost []bool
}

type floatDist int

const (
	symmetricDist floatDist = iota
	rangeDist
	gaussDist
)

func (f *floatFill) fill(dst []byte, first int64, scratch []float32) {
	n := len(dst) / f.dtype.Size()
	base := uint64(first)
	// The bulk of every checkpoint: plain BF16 Linear weights, in one pass.
	if f.kind == symmetricDist && f.boost == nil && f.dtype == safetensors.BF16 {
		for j := 0; j < n; j++ {
			x := symmetric(draw(f.key, base+uint64(j))) * f.a
			binary.LittleEndian.PutUint16(dst[2*j:], half.F32ToBF16(x))
		}
		return
	}
	v := scratch[:n]
	switch f.kind {
	case symmetricDist:
		for j := range v {
			v[j] = symmetric(draw(f.key, base+uint64(j))) * f.a
		}
	case rangeDist:
		for j := range v {
			v[j] = f.a + float32(unit(draw(f.key, base+uint64(j)))*f.b)
		}
	case gaussDist:
		for j := range v {
			i := 2 * (base + uint64(j))
			v[j] = gaussian(draw(f.key, i), draw(f.key, i+1)) * f.a
		}
	}
	if f.boost != nil {
		cols := int64(len(f.boost))
		for j := range v {
			if f.boost[(first+int64(j))%cols] {
				v[j] *= OutlierFactor
			}
		}
	}
	encode(dst, v, f.dtype)
}

func encode(dst []byte, v []float32, d safetensors.DType) {
	switch d {
	case safetensors.F32:
		for j, x := range v {
			binary.LittleEndian.PutUint32(dst[4*j:], math.Float32bits(x))
		}
	case safetensors.BF16:
		for j, x := range v {
			binary.LittleEndian.PutUint16(dst[2*j:], half.F32ToBF16(x))
		}
	case safetensors.F16:
		for j, x := range v {
			binary.LittleEndian.PutUint16(dst[2*j:], half.F32ToF16(x))
		}
	}
}

// qweightFill: every nibble is an independent uniform code 0..15, so the
// packing order does not matter and one draw makes one word.
type qweightFill struct{ key uint64 }

func (f *qweightFill) fill(dst []byte, first int64, _ []float32) {
	for j := 0; j < len(dst)/4; j++ {
		binary.LittleEndian.PutUint32(dst[4*j:], uint32(draw(f.key, uint64(first)+uint64(j))))
	}
}

// qzerosFill: each nibble is 7 or 8, centring q−z on zero.
type qzerosFill struct{ key uint64 }

func (f *qzerosFill) fill(dst []byte, first int64, _ []float32) {
	for j := 0; j < len(dst)/4; j++ {
		r := draw(f.key, uint64(first)+uint64(j))
		w := uint32(0x77777777)
		for k := 0; k < 8; k++ {
			w += uint32(r>>k&1) << (4 * k)
		}
		binary.LittleEndian.PutUint32(dst[4*j:], w)
	}
}

// awqScale is s0 for a quantized Linear with in inputs.
func awqScale(in int) float32 {
	return float32(1 / math.Sqrt(float64(in)*21.5*(1+0.25/12)))
}

// fillFor picks the distribution of one expected tensor.
func fillFor(e checkpoint.Expectation, dtype safetensors.DType, seed uint64, group int, outliers []bool) (filler, error) {
	key := streamKey(seed, e.Name)
	switch e.Kind {
	case checkpoint.Embedding:
		return &floatFill{key: key, dtype: dtype, kind: symmetricDist, a: embeddingStd * sqrt3, boost: outliers}, nil
	case checkpoint.Norm:
		f := &floatFill{key: key, dtype: dtype, kind: rangeDist, a: normLo, b: normHi - normLo}
		if strings.HasSuffix(e.Name, ".input_layernorm.weight") || strings.HasSuffix(e.Name, ".post_attention_layernorm.weight") {
			f.boost = outliers
		}
		return f, nil
	case checkpoint.Linear:
		return &floatFill{key: key, dtype: dtype, kind: symmetricDist, a: float32(sqrt3 / math.Sqrt(float64(e.Shape[1])))}, nil
	case checkpoint.Classifier:
		return &floatFill{key: key, dtype: dtype, kind: symmetricDist, a: float32(classifierStd * sqrt3 / math.Sqrt(float64(e.Shape[1])))}, nil
	case checkpoint.QWeight:
		return &qweightFill{key: key}, nil
	case checkpoint.QZeros:
		return &qzerosFill{key: key}, nil
	case checkpoint.Scales:
		s0 := awqScale(e.Shape[0] * group)
		return &floatFill{key: key, dtype: safetensors.F16, kind: rangeDist, a: 0.75 * s0, b: 0.5 * s0}, nil
	}
	return nil, fmt.Errorf("no generator for %s (%s)", e.Name, e.Kind)
}

// lmHeadFill is the --noesis output layer.
func lmHeadFill(seed uint64) filler {
	return &floatFill{key: streamKey(seed, "lm_head.weight"), dtype: safetensors.F16, kind: gaussDist, a: lmHeadStd}
}
