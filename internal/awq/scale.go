package awq

import (
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/kernels"
)

// GridPoints is the number of ratios the scale search tries: r = 0, 1/20,
// …, 19/20 (AutoAWQ's duo-scaling grid).
const GridPoints = 20

// ClipSteps is the number of clipping thresholds tried per group: max|w|
// shrunk by 0, 1/20, …, 9/20 (max_shrink 0.5 on a 20-point grid).
const ClipSteps = 10

// ClipShrink returns the factor of clipping step i, 1 − i/20.
func ClipShrink(i int) float32 { return 1 - float32(i)/GridPoints }

// GridRatio returns ratio i of the scale search, i/20.
func GridRatio(i int) float64 { return float64(i) / GridPoints }

// WeightMeanAccum adds, for every input column k of w ([N][K]), the sum
// over rows of |w[n][k]| / (max |w| over that row's group of k + 1e-6) to
// sum (len K). Dividing by the total number of rows of all the Linears that
// share the input gives w_mean, the weight-side statistic of duo scaling.
func WeightMeanAccum(sum []float64, w []float32, N, K, group int) error {
	if err := checkShape(len(w), N, K, group); err != nil {
		return err
	}
	if len(sum) != K {
		return fmt.Errorf("awq: weight-mean accumulator has %d columns, want %d", len(sum), K)
	}
	for n := 0; n < N; n++ {
		row := w[n*K : (n+1)*K]
		for g := 0; g < K; g += group {
			v := row[g : g+group]
			var m float32
			for _, x := range v {
				m = max(m, abs32(x))
			}
			inv := 1 / (float64(m) + 1e-6)
			for j, x := range v {
				sum[g+j] += float64(abs32(x)) * inv
			}
		}
	}
	return nil
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// ScaleCandidate writes the per-input scales tried at grid ratio r:
// with duo scaling s = max(x_mean^r / (w_mean^(1−r) + 1e-4), 1e-4), without
// it s = max(x_mean^r, 1e-4); then s /= sqrt(max(s)·min(s)), and any
// infinite or NaN entry becomes 1. With duo scaling r = 0 is not the
// identity. xMean is the mean |activation| per input channel, wMean the
// weight statistic of WeightMeanAccum.
func ScaleCandidate(dst []float32, xMean, wMean []float64, r float64, duo bool) {
	lo, hi := math.Inf(1), math.Inf(-1)
	raw := make([]float64, len(dst))
	for k := range dst {
		s := math.Pow(xMean[k], r)
		if duo {
			s /= math.Pow(wMean[k], 1-r) + 1e-4
		}
		s = math.Max(s, 1e-4)
		raw[k] = s
		lo, hi = math.Min(lo, s), math.Max(hi, s)
	}
	norm := math.Sqrt(hi * lo)
	for k, s := range raw {
		v := float32(s / norm)
		if math.IsInf(float64(v), 0) || v != v || v == 0 {
			v = 1
		}
		dst[k] = v
	}
}

// ClampGroup clamps every value of v to [−m, m] into dst.
func ClampGroup(dst, v []float32, m float32) {
	for j, x := range v {
		dst[j] = min(max(x, -m), m)
	}
}

// MaxAbs is max |v|.
func MaxAbs(v []float32) float32 {
	var m float32
	for _, x := range v {
		m = max(m, abs32(x))
	}
	return m
}

// FakeQuantizeGroup is FakeQuantize for a single group (dst may alias v).
func FakeQuantizeGroup(dst, v []float32) error { return fakeQuantizeGroup(dst, v) }

// ClipDelta writes Q(clamp(v, −bound, bound)) − v into dst, the weight
// error of one group clipped at bound, in a single pass. mx and mn are
// max(v) and min(v), so the clamped group's range needs no scan:
// [max(mn, −bound), min(mx, bound)]. It equals ClampGroup followed by
// FakeQuantizeGroup minus v, value for value.
func ClipDelta(dst, v []float32, mx, mn, bound float32) error {
	hi, lo := min(mx, bound), max(mn, -bound)
	_, sf, err := groupScale(hi, lo)
	if err != nil {
		return err
	}
	kernels.ClipDelta(dst, v, bound, sf, zeroPoint(lo, sf))
	return nil
}

// GroupRange returns max and min of v, refusing NaN.
func GroupRange(v []float32) (mx, mn float32, err error) { return groupRange(v) }
