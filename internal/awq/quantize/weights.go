package quantize

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// mat is one Linear's weight in float32, nn.Linear layout [N][K].
type mat struct {
	name string // module path, e.g. model.layers.3.mlp.up_proj
	W    []float32
	N, K int
}

// toMat widens a loaded projection to float32.
func toMat(name string, l qwen3.Linear) (*mat, error) {
	N, K := l.Dims()
	m := &mat{name: name, W: make([]float32, N*K), N: N, K: K}
	switch v := l.(type) {
	case *qwen3.F32Linear:
		copy(m.W, v.W)
	case *qwen3.BF16Linear:
		kernels.ParallelRange(N, 1, func(lo, hi int) { half.BF16SliceToF32(m.W[lo*K:hi*K], v.W[lo*K:hi*K]) })
	case *qwen3.F16Linear:
		kernels.ParallelRange(N, 1, func(lo, hi int) { half.F16SliceToF32(m.W[lo*K:hi*K], v.W[lo*K:hi*K]) })
	default:
		return nil, fmt.Errorf("%s: a %T projection cannot be quantized (want F32, BF16 or F16 weights)", name, l)
	}
	for i, x := range m.W {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("%s.weight: value %v at [%d][%d]", name, x, i/K, i%K)
		}
	}
	return m, nil
}

// scaleCols multiplies column k of every row by s[k].
func (m *mat) scaleCols(s []float32) {
	kernels.ParallelRange(m.N, 1, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			row := m.W[n*m.K : (n+1)*m.K]
			for k := range row {
				row[k] *= s[k]
			}
		}
	})
}

// divRows divides row n by s[n].
func (m *mat) divRows(s []float32) {
	for n := 0; n < m.N; n++ {
		row := m.W[n*m.K : (n+1)*m.K]
		for k := range row {
			row[k] /= s[n]
		}
	}
}

// pack applies Q to the weight and packs it.
func (m *mat) pack(group int) (*awq.Packed, error) {
	p, err := awq.NewPacked(m.K, m.N, group)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.name, err)
	}
	var fail firstError
	kernels.ParallelRange(m.N, 8, func(lo, hi int) {
		if err := p.QuantizeRows(m.W, lo, hi); err != nil {
			fail.set(fmt.Errorf("%s: %w", m.name, err))
		}
	})
	if err := fail.get(); err != nil {
		return nil, err
	}
	return p, nil
}

// firstError keeps the first error of parallel workers.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// SearchKernel selects how the scale search evaluates a candidate.
type SearchKernel string

const (
	// SearchInt4 runs candidates through the engine's INT4 kernels: the
	// candidate is quantized and packed exactly as it would be stored, and
	// its loss includes the int8 activation rounding of those kernels, so
	// the search optimises what inference computes. About four times
	// faster than SearchFloat on AVX-512 machines.
	SearchInt4 SearchKernel = "int4"
	// SearchFloat runs candidates as float32 fake-quantized weights,
	// Q(W·s)/s, as AutoAWQ does (in fp16 there).
	SearchFloat SearchKernel = "float"
)

// candidates builds, for the Linears of one scaling group and per-input
// scales s, projections computing x·(Q(W·diag(s))/diag(s))ᵀ. packs, when
// not nil, holds one reusable packed buffer per Linear (the search builds
// 20 candidates of the same shapes).
func candidates(ms []*mat, s []float32, group int, kind SearchKernel, packs []*awq.Packed) ([]qwen3.Linear, error) {
	out := make([]qwen3.Linear, len(ms))
	inv := make([]float32, len(s))
	for k, v := range s {
		inv[k] = 1 / v
	}
	if kind == SearchFloat {
		for i, m := range ms {
			w := make([]float32, len(m.W))
			if err := fakeQuantScaled(w, m, s, inv, group); err != nil {
				return nil, err
			}
			out[i] = &qwen3.F32Linear{W: w, Out: m.N, In: m.K}
		}
		return out, nil
	}
	packed := make([]*awq.Packed, len(ms))
	for i, m := range ms {
		var p *awq.Packed
		if packs != nil && packs[i] != nil {
			p = packs[i]
		} else {
			var err error
			if p, err = awq.NewPacked(m.K, m.N, group); err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			if packs != nil {
				packs[i] = p
			}
		}
		var fail firstError
		kernels.ParallelRange(m.N, 8, func(lo, hi int) {
			if err := p.QuantizeScaledRows(m.W, s, lo, hi); err != nil {
				fail.set(fmt.Errorf("%s: %w", m.name, err))
			}
		})
		if err := fail.get(); err != nil {
			return nil, err
		}
		packed[i] = p
	}
	errs := make([]error, len(ms))
	kernels.ParallelFor(len(packed), kernels.Threads(), func(_, i int) {
		p := packed[i]
		m, err := kernels.RepackAWQ(p.QWeight, p.QZeros, p.Scales, p.K, p.N, p.Group)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", ms[i].name, err)
			return
		}
		out[i] = &scaledInt4{inv: inv, m: m}
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fakeQuantScaled writes Q(W·s)/s into dst.
func fakeQuantScaled(dst []float32, m *mat, s, inv []float32, group int) error {
	var fail firstError
	kernels.ParallelRange(m.N, 1, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			row, d := m.W[n*m.K:(n+1)*m.K], dst[n*m.K:(n+1)*m.K]
			for k, x := range row {
				d[k] = x * s[k]
			}
			if err := awq.FakeQuantize(d, d, 1, m.K, group); err != nil {
				fail.set(fmt.Errorf("%s: output %d: %w", m.name, n, err))
				return
			}
			for k := range d {
				d[k] *= inv[k]
			}
		}
	})
	return fail.get()
}

// scaledInt4 computes (x/s)·Wqᵀ with Wq an INT4 matrix of W·diag(s): the
// division by s is what the folded norm (or the previous Linear) does at
// inference. It is used by one goroutine at a time.
type scaledInt4 struct {
	inv []float32
	m   *kernels.Int4Matrix
	buf []float32
}

func (l *scaledInt4) Forward(dst, x []float32, T int) {
	K := l.m.K
	xs := grow(&l.buf, T*K)
	kernels.ParallelRange(T, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row, d := x[t*K:(t+1)*K], xs[t*K:(t+1)*K]
			for k, v := range row {
				d[k] = v * l.inv[k]
			}
		}
	})
	kernels.MatMulInt4(dst, xs, l.m, T)
}

func (l *scaledInt4) Dims() (int, int) { return l.m.N, l.m.K }

func grow(s *[]float32, n int) []float32 {
	if cap(*s) < n {
		*s = make([]float32, n)
	}
	*s = (*s)[:n]
	return *s
}

// Encoders for tensor bytes (little-endian).

func i32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

func u16Bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// f16Bytes converts float32 values to fp16, refusing values beyond its
// range (they would become infinities).
func f16Bytes(name string, v []float32) ([]byte, error) {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		h := f32ToF16(x)
		if h&0x7c00 == 0x7c00 {
			return nil, fmt.Errorf("%s: %w", name, f16Error(i, x))
		}
		binary.LittleEndian.PutUint16(b[2*i:], h)
	}
	return b, nil
}

// f16Error says why the value x at index i has no fp16 form: it is not a
// number at all, or beyond fp16's range.
func f16Error(i int, x float32) error {
	if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
		return fmt.Errorf("value %g at index %d is not a finite number", x, i)
	}
	return fmt.Errorf("value %g at index %d does not fit float16", x, i)
}

// f32ToF16 is half.F32ToF16 (round to nearest even) with a fast path for
// the values fp16 holds as normal numbers, which are nearly all weights:
// the exponent is rebiased and the 13 dropped mantissa bits rounded. A
// carry out of the mantissa correctly bumps the exponent (up to infinity).
// Embeddings of billions of values go through it.
func f32ToF16(x float32) uint16 {
	b := math.Float32bits(x)
	exp := b >> 23 & 0xff
	if exp < 113 || exp > 142 {
		return half.F32ToF16(x)
	}
	h := uint16(b>>16&0x8000) | uint16(exp-112)<<10 | uint16(b>>13&0x3ff)
	rem := b & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++
	}
	return h
}
