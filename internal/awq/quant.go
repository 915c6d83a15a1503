package awq

import (
	"errors"
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
)

// MaxCode is the largest 4-bit code.
const MaxCode = 15

// minRange keeps a constant group from getting a zero scale in the quantizer.
const minRange = 1e-5

// Quantized is one Linear quantized with Q: asymmetric 4-bit codes with a
// float16 scale and an integer zero point per (group of Group inputs,
// output). The arrays use the checkpoint's orientation, input-major:
// Codes [K][N], Zeros and Scales [K/Group][N].
type Quantized struct {
	K, N, Group int
	Codes       []uint8
	Zeros       []uint8
	Scales      []uint16 // float16 bits
}

// Quantize applies Q to w, an nn.Linear weight [N][K] (row-major), with
// groups of group consecutive inputs: per (output, group), s = fp16(max(max
// − min, 1e-5)/15), z = clamp(−round(min/s), 0, 15), q = clamp(round(w/s) +
// z, 0, 15), rounding half to even. The arithmetic is float32 with s
// rounded to fp16 first, so the codes are bit-exact with the reference
// (tools/reference/awq_pack_vectors.py) and reproduce (q − z)·s exactly.
func Quantize(w []float32, N, K, group int) (*Quantized, error) {
	if err := checkShape(len(w), N, K, group); err != nil {
		return nil, err
	}
	groups := K / group
	q := &Quantized{K: K, N: N, Group: group,
		Codes: make([]uint8, K*N), Zeros: make([]uint8, groups*N), Scales: make([]uint16, groups*N)}
	var codes [MaxGroup]uint8
	for n := 0; n < N; n++ {
		row := w[n*K : (n+1)*K]
		for g := 0; g < groups; g++ {
			s, z, err := quantizeGroup(codes[:group], row[g*group:(g+1)*group])
			if err != nil {
				return nil, fmt.Errorf("awq: output %d, inputs %d..%d: %w", n, g*group, (g+1)*group-1, err)
			}
			q.Scales[g*N+n], q.Zeros[g*N+n] = s, z
			for j, c := range codes[:group] {
				q.Codes[(g*group+j)*N+n] = c
			}
		}
	}
	return q, nil
}

// MaxGroup bounds the group size Quantize and FakeQuantize accept (the
// per-group scratch lives on the stack); real checkpoints use 32–128.
const MaxGroup = 1024

func checkShape(n, N, K, group int) error {
	if N <= 0 || K <= 0 {
		return fmt.Errorf("awq: weight %d×%d must have positive dimensions", N, K)
	}
	if group <= 0 || group > MaxGroup || K%group != 0 {
		return fmt.Errorf("awq: group size %d must be in 1..%d and divide in_features %d", group, MaxGroup, K)
	}
	if n != N*K {
		return fmt.Errorf("awq: weight %d×%d needs %d values, got %d", N, K, N*K, n)
	}
	return nil
}

// quantizeGroup computes one group's codes, scale (fp16 bits) and zero
// point. A group whose range does not fit fp16 scales, or holds a NaN, is
// an error: its codes would be meaningless.
func quantizeGroup(codes []uint8, v []float32) (uint16, uint8, error) {
	mx, mn, err := groupRange(v)
	if err != nil {
		return 0, 0, err
	}
	s, sf, err := groupScale(mx, mn)
	if err != nil {
		return 0, 0, err
	}
	z := zeroPoint(mn, sf)
	for j, x := range v {
		codes[j] = uint8(clampCode(roundEven(x/sf) + z))
	}
	return s, uint8(z), nil
}

// groupRange returns max and min of v (the first of equal extremes, as a
// loop with strict comparisons from v[0] finds them; kernels.MinMax).
func groupRange(v []float32) (mx, mn float32, err error) {
	mx, mn, nan := kernels.MinMax(v)
	if nan {
		return 0, 0, errNaN
	}
	return mx, mn, nil
}

// errNaN rejects a group holding NaN: its codes would be meaningless.
var errNaN = errors.New("weights hold NaN")

// groupScale is s = fp16(max(mx−mn, 1e-5)/15) as bits and as float32.
func groupScale(mx, mn float32) (uint16, float32, error) {
	r := mx - mn
	if r != r || math.IsInf(float64(r), 0) {
		return 0, 0, fmt.Errorf("weights range over [%g, %g], which has no 4-bit scale", mn, mx)
	}
	s := half.F32ToF16(max(r, minRange) / MaxCode)
	sf := half.F16ToF32(s)
	if math.IsInf(float64(sf), 0) {
		return 0, 0, fmt.Errorf("weights range over [%g, %g], beyond what an fp16 scale can hold", mn, mx)
	}
	return s, sf, nil
}

// zeroPoint is clamp(−round(mn/s), 0, 15).
func zeroPoint(mn, s float32) float32 { return clampCode(-roundEven(mn / s)) }

// clampCode clamps to [0, 15]; the branches are almost never taken.
func clampCode(x float32) float32 {
	if x < 0 {
		x = 0
	}
	if x > MaxCode {
		x = MaxCode
	}
	return x
}

// roundEven rounds to the nearest integer, ties to even, in float32:
// adding and subtracting 2^23 to |x| leaves no fraction bits, and the FPU
// rounds that addition half to even; the sign is put back with bit
// operations. It has no data-dependent branch (the signs of weights are
// unpredictable) and no float64 round trip, which makes it several times
// faster than math.RoundToEven; Q calls it for every weight of every
// candidate scale. Magnitudes of 2^23 and above are integers already.
func roundEven(x float32) float32 {
	const magic = 1 << 23
	const sign = 1 << 31
	b := math.Float32bits(x)
	a := math.Float32frombits(b &^ sign)
	if !(a < magic) { // also NaN
		return x
	}
	r := float32(float32(a+magic) - magic)
	return math.Float32frombits(math.Float32bits(r) | b&sign)
}

// FakeQuantize writes Q(w) dequantized, (q − z)·s, into dst (both [N][K];
// dst may alias w). It is Quantize followed by dequantization without the
// intermediate arrays, for the scale and clipping searches.
func FakeQuantize(dst, w []float32, N, K, group int) error {
	if err := checkShape(len(w), N, K, group); err != nil {
		return err
	}
	if len(dst) != len(w) {
		return fmt.Errorf("awq: destination holds %d values, want %d", len(dst), len(w))
	}
	for o := 0; o < N*K; o += group {
		if err := fakeQuantizeGroup(dst[o:o+group], w[o:o+group]); err != nil {
			return fmt.Errorf("awq: output %d, inputs %d..%d: %w", o/K, o%K, o%K+group-1, err)
		}
	}
	return nil
}

func fakeQuantizeGroup(dst, v []float32) error {
	mx, mn, err := groupRange(v)
	if err != nil {
		return err
	}
	_, sf, err := groupScale(mx, mn)
	if err != nil {
		return err
	}
	z := zeroPoint(mn, sf)
	for j, x := range v {
		dst[j] = (clampCode(roundEven(x/sf)+z) - z) * sf
	}
	return nil
}

// Pack packs the codes and zero points in the GEMM layout: qweight
// [K][N/8] and qzeros [K/Group][N/8].
func (q *Quantized) Pack() (qweight, qzeros []uint32, err error) {
	if qweight, err = Pack(q.Codes, q.K, q.N); err != nil {
		return nil, nil, fmt.Errorf("qweight: %w", err)
	}
	if qzeros, err = Pack(q.Zeros, q.K/q.Group, q.N); err != nil {
		return nil, nil, fmt.Errorf("qzeros: %w", err)
	}
	return qweight, qzeros, nil
}

// Dequantize expands the codes back to an nn.Linear weight [N][K].
func (q *Quantized) Dequantize() []float32 {
	w := make([]float32, q.N*q.K)
	for k := 0; k < q.K; k++ {
		g := k / q.Group
		for n := 0; n < q.N; n++ {
			s := half.F16ToF32(q.Scales[g*q.N+n])
			w[n*q.K+k] = (float32(q.Codes[k*q.N+n]) - float32(q.Zeros[g*q.N+n])) * s
		}
	}
	return w
}

// Packed is one Linear quantized with Q, held as the checkpoint's GEMM
// tensors: QWeight [K][N/8] and QZeros [K/Group][N/8] (int32 words, as
// safetensors stores them) and Scales [K/Group][N] (fp16 bits).
type Packed struct {
	K, N, Group int
	QWeight     []int32
	QZeros      []int32
	Scales      []uint16
}

// NewPacked allocates the tensors of a K-input, N-output Linear.
func NewPacked(K, N, group int) (*Packed, error) {
	if err := checkShape(N*K, N, K, group); err != nil {
		return nil, err
	}
	if N%8 != 0 {
		return nil, fmt.Errorf("awq: %d outputs is not a multiple of 8, which GEMM packing needs", N)
	}
	g := K / group
	return &Packed{K: K, N: N, Group: group,
		QWeight: make([]int32, K*N/8), QZeros: make([]int32, g*N/8), Scales: make([]uint16, g*N)}, nil
}

// QuantizeRows applies Q to outputs [n0, n1) of w ([N][K]) and packs them
// in place, with the same codes as Quantize followed by Pack. n0 and n1
// must be multiples of 8: each word holds 8 outputs. Calls on disjoint
// ranges may run concurrently.
func (p *Packed) QuantizeRows(w []float32, n0, n1 int) error {
	return p.QuantizeScaledRows(w, nil, n0, n1)
}

// QuantizeScaledRows is QuantizeRows of W·diag(s), the weight with input
// column k multiplied by s[k], without building that matrix (the AWQ
// scale search quantizes 20 scalings of every Linear). s nil means no
// scaling.
func (p *Packed) QuantizeScaledRows(w, s []float32, n0, n1 int) error {
	K, N, G := p.K, p.N, p.Group
	if len(w) != N*K {
		return fmt.Errorf("awq: weight needs %d values, got %d", N*K, len(w))
	}
	if s != nil && len(s) != K {
		return fmt.Errorf("awq: %d scales for %d inputs", len(s), K)
	}
	if n0 < 0 || n1 > N || n0 > n1 || n0%8 != 0 || n1%8 != 0 {
		return fmt.Errorf("awq: output range [%d, %d) is not 8-aligned inside [0, %d)", n0, n1, N)
	}
	groups := K / G
	// The 8 outputs of one word are quantized one after the other, each
	// OR-ing its code into its nibble of the words of every input. Up to
	// packBatch words of a row of QWeight are built before they are
	// stored, so the stores fill whole cache lines instead of touching one
	// line per input for every word.
	bw := min(packBatch, (n1-n0)/8)
	acc := make([]uint32, bw*K) // word column b of the batch at acc[b*K:]
	zacc := make([]uint32, bw*groups)
	tmp := make([]float32, G)
	for c0 := n0 / 8; c0 < n1/8; c0 += bw {
		nw := min(bw, n1/8-c0)
		clear(acc)
		clear(zacc)
		for b := 0; b < nw; b++ {
			if err := p.quantizeWord(acc[b*K:(b+1)*K], zacc[b*groups:(b+1)*groups], tmp, w, s, 8*(c0+b)); err != nil {
				p.storeWords(acc, zacc, c0, b) // the words before, as the word-at-a-time loop left them
				return err
			}
		}
		p.storeWords(acc, zacc, c0, nw)
	}
	return nil
}

// packBatch is the number of words QuantizeScaledRows packs per pass: 16
// int32 words are one 64-byte cache line of a QWeight row.
const packBatch = 16

// quantizeWord quantizes outputs nb..nb+7 of w·diag(s) into the word
// accumulators acc (one per input) and zacc (one per group), and their
// scales into p.Scales.
func (p *Packed) quantizeWord(acc, zacc []uint32, tmp, w, s []float32, nb int) error {
	K, N, G := p.K, p.N, p.Group
	for j := 0; j < 8; j++ {
		n := nb + j
		shift := uint(4 * ReverseOrder[j])
		row := w[n*K : (n+1)*K]
		for g := range zacc {
			v := row[g*G : (g+1)*G]
			var mx, mn float32
			var nan bool
			if s != nil {
				mx, mn, nan = kernels.ScaleRange(tmp, v, s[g*G:(g+1)*G])
				v = tmp
			} else {
				mx, mn, nan = kernels.MinMax(v)
			}
			err := errNaN
			if !nan {
				var sc uint16
				var sf float32
				if sc, sf, err = groupScale(mx, mn); err == nil {
					z := zeroPoint(mn, sf)
					kernels.QuantCodesOr(acc[g*G:(g+1)*G], v, sf, z, shift)
					p.Scales[g*N+n] = sc
					zacc[g] |= uint32(z) << shift
				}
			}
			if err != nil {
				return fmt.Errorf("awq: output %d, inputs %d..%d: %w", n, g*G, (g+1)*G-1, err)
			}
		}
	}
	return nil
}

// storeWords stores the first nw word columns of a batch starting at
// word column c0: acc holds column b at acc[b*K:], zacc at zacc[b*groups:].
func (p *Packed) storeWords(acc, zacc []uint32, c0, nw int) {
	K, words, groups := p.K, p.N/8, p.K/p.Group
	for k := 0; k < K; k++ {
		dst := p.QWeight[k*words+c0 : k*words+c0+nw]
		for b := range dst {
			dst[b] = int32(acc[b*K+k])
		}
	}
	for g := 0; g < groups; g++ {
		dst := p.QZeros[g*words+c0 : g*words+c0+nw]
		for b := range dst {
			dst[b] = int32(zacc[b*groups+g])
		}
	}
}
