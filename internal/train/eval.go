package train

import (
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// HeadDTypes are the stored dtypes of a path's four tensors (pre, norm,
// risk, category): the new heads keep the source's.
type HeadDTypes [4]safetensors.DType

// stored is h rounded to the dtypes it will be written in: what the
// engine reads back from the written model.
type stored struct {
	dtypes HeadDTypes
	bits   [4][]uint16  // BF16/F16 bit patterns, per tensor (nil for F32)
	f32    [4][]float32 // the values as float32 (rounded)
}

func roundHead(h *Head, dt HeadDTypes) (*stored, error) {
	s := &stored{dtypes: dt}
	for i, t := range h.tensors() {
		switch dt[i] {
		case safetensors.F32:
			s.f32[i] = append([]float32(nil), t...)
		case safetensors.BF16, safetensors.F16:
			b := make([]uint16, len(t))
			f := make([]float32, len(t))
			for j, v := range t {
				if dt[i] == safetensors.BF16 {
					b[j] = half.F32ToBF16(v)
					f[j] = half.BF16ToF32(b[j])
				} else {
					b[j] = half.F32ToF16(v)
					f[j] = half.F16ToF32(b[j])
				}
			}
			s.bits[i], s.f32[i] = b, f
		default:
			return nil, fmt.Errorf("head dtype %s is not supported (want F32, BF16 or F16)", dt[i])
		}
	}
	return s, nil
}

// engineHead builds the engine's head from the stored weights: the same
// Linear types and kernels qwen3.Load builds from the written tensors.
func (s *stored) engineHead(h *Head) *qwen3.Head {
	lin := func(i, out, in int) qwen3.Linear {
		switch s.dtypes[i] {
		case safetensors.BF16:
			return &qwen3.BF16Linear{W: s.bits[i], Out: out, In: in}
		case safetensors.F16:
			return &qwen3.F16Linear{W: s.bits[i], Out: out, In: in}
		}
		return &qwen3.F32Linear{W: s.f32[i], Out: out, In: in}
	}
	return &qwen3.Head{
		Pre:      lin(0, h.Inner, h.Hidden),
		Norm:     &qwen3.RMSNorm{W: s.f32[1], Eps: h.Eps},
		Risk:     lin(2, h.Levels, h.Inner),
		Category: lin(3, h.Categories, h.Inner),
	}
}

// Prediction is the verdict the written model gives at one sample's
// position: argmax of the softmax of each head, as guard reads it.
type Prediction struct {
	Risk, Category int
}

// predict runs the engine head over the rows of d's samples in chunks.
func predict(eh *qwen3.Head, hidden int, d Data) []Prediction {
	const chunk = 256
	L, C := eh.Levels(), eh.Categories()
	G, _ := eh.Pre.Dims()
	x := make([]float32, chunk*hidden)
	pre := make([]float32, chunk*G)
	risk, cat := make([]float32, chunk*L), make([]float32, chunk*C)
	out := make([]Prediction, len(d.Samples))
	for lo := 0; lo < len(d.Samples); lo += chunk {
		n := min(chunk, len(d.Samples)-lo)
		for j := range n {
			r := d.Samples[lo+j].Row
			copy(x[j*hidden:(j+1)*hidden], d.X[r*hidden:(r+1)*hidden])
		}
		eh.Forward(x[:n*hidden], n, pre, risk[:n*L], cat[:n*C])
		for j := range n {
			out[lo+j] = Prediction{Risk: verdictArgmax(risk[j*L : (j+1)*L]), Category: verdictArgmax(cat[j*C : (j+1)*C])}
		}
	}
	return out
}

// verdictArgmax is guard's reading of a head: softmax, then the first
// index of the largest probability (NaN never wins). Taking the argmax of
// the probabilities, not the logits, keeps ties that softmax rounding
// creates resolved the same way.
func verdictArgmax(logits []float32) int {
	p := append([]float32(nil), logits...)
	kernels.Softmax(p)
	best, bi := float32(math.Inf(-1)), 0
	for i, v := range p {
		if v > best {
			best, bi = v, i
		}
	}
	return bi
}
