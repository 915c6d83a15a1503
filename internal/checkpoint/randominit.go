package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Heuristic is the outcome of a statistical check. It is a guess from a
// sample, reported as such, and does not by itself fail the report.
type Heuristic struct {
	Tensor  string           `json:"tensor"`
	Check   string           `json:"check"`
	Flagged bool             `json:"flagged"`
	Message string           `json:"message"`
	Stats   *RandomInitStats `json:"stats,omitempty"`
}

// RandomInitStats summarises sampled rows of a [rows, cols] weight.
type RandomInitStats struct {
	SampledRows int     `json:"sampled_rows"`
	Cols        int     `json:"cols"`
	Mean        float64 `json:"mean"`
	Std         float64 `json:"std"`
	// ExcessKurtosis is 0 for a Gaussian; trained embeddings are heavy-tailed (> 0).
	ExcessKurtosis float64 `json:"excess_kurtosis"`
	// RowNormCV is std/mean of the row L2 norms; for i.i.d. Gaussian rows it
	// is about 1/sqrt(2*cols) (GaussianRowNormCV).
	RowNormCV         float64 `json:"row_norm_cv"`
	GaussianRowNormCV float64 `json:"gaussian_row_norm_cv"`
	NonFinite         int     `json:"non_finite,omitempty"`
}

// randomInitRows bounds the sample: 2048 rows of an 8B lm_head are 16 MiB
// of the 1.2 GiB tensor.
const randomInitRows = 2048

// initializerRange is the std HF's _init_weights gives Linear weights.
const initializerRange = 0.02

// LooksRandomInit applies the thresholds: centred, Gaussian (|excess
// kurtosis| < 0.3) and with row norms no more spread than twice what
// i.i.d. Gaussian rows give. A trained output layer fails at least one.
func (s *RandomInitStats) LooksRandomInit() bool {
	return s.Std > 0 && s.NonFinite == 0 &&
		math.Abs(s.Mean) < 0.05*s.Std &&
		math.Abs(s.ExcessKurtosis) < 0.3 &&
		s.RowNormCV < 2*s.GaussianRowNormCV+0.005
}

// SampleRandomInit computes RandomInitStats over up to maxRows evenly
// spaced rows of a 2-D float tensor; it touches only those rows' bytes.
func SampleRandomInit(t *safetensors.Tensor, maxRows int) (*RandomInitStats, error) {
	if len(t.Shape) != 2 || t.Shape[0] <= 0 || t.Shape[1] <= 0 {
		return nil, fmt.Errorf("tensor %q: shape %v is not a 2-D matrix", t.Name, t.Shape)
	}
	es := t.DType.Size()
	switch t.DType {
	case safetensors.F32, safetensors.F16, safetensors.BF16:
	default:
		return nil, fmt.Errorf("tensor %q: dtype %s is not a float type", t.Name, t.DType)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if int64(len(t.Data)) != int64(rows)*int64(cols)*int64(es) {
		return nil, fmt.Errorf("tensor %q: %d bytes for shape %v", t.Name, len(t.Data), t.Shape)
	}
	n := min(rows, maxRows)
	s := &RandomInitStats{SampledRows: n, Cols: cols, GaussianRowNormCV: 1 / math.Sqrt(2*float64(cols))}
	row := make([]float64, cols)
	norms := make([]float64, 0, n)
	// Raw power sums; the central moments follow from them. The values are
	// centred near 0, so the cancellation is harmless in float64.
	var p1, p2, p3, p4, count float64
	for i := 0; i < n; i++ {
		r := int(int64(i) * int64(rows) / int64(n))
		b := t.Data[r*cols*es : (r+1)*cols*es]
		for j := range row {
			var v float32
			switch t.DType {
			case safetensors.F32:
				v = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
			case safetensors.F16:
				v = half.F16ToF32(binary.LittleEndian.Uint16(b[2*j:]))
			default:
				v = half.BF16ToF32(binary.LittleEndian.Uint16(b[2*j:]))
			}
			row[j] = float64(v)
		}
		var sq float64
		finite := true
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				s.NonFinite++
				finite = false
				continue
			}
			v2 := v * v
			p1 += v
			p2 += v2
			p3 += v2 * v
			p4 += v2 * v2
			sq += v2
			count++
		}
		if finite {
			norms = append(norms, math.Sqrt(sq))
		}
	}
	if count == 0 {
		return s, nil
	}
	mu := p1 / count
	e2, e3, e4 := p2/count, p3/count, p4/count
	m2 := e2 - mu*mu
	m4 := e4 - 4*mu*e3 + 6*mu*mu*e2 - 3*mu*mu*mu*mu
	s.Mean = mu
	if m2 > 0 {
		s.Std = math.Sqrt(m2)
		s.ExcessKurtosis = m4/(m2*m2) - 3
	}
	s.RowNormCV = cv(norms)
	return s, nil
}

func cv(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	if mean == 0 {
		return 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return math.Sqrt(ss/float64(len(xs))) / mean
}

// lmHeadHeuristic samples lm_head.weight and records whether it looks like
// a fresh random initialisation.
func (r *LoadReport) lmHeadHeuristic(set *safetensors.Set) {
	const name = "lm_head.weight"
	h := Heuristic{Tensor: name, Check: "random-init"}
	t, err := set.Tensor(name)
	var s *RandomInitStats
	if err == nil {
		s, err = SampleRandomInit(t, randomInitRows)
	}
	if err != nil {
		h.Message = fmt.Sprintf("HEURISTIC not run on %s: %v", name, err)
		r.Heuristics = append(r.Heuristics, h)
		return
	}
	h.Stats = s
	h.Flagged = s.LooksRandomInit()
	stats := fmt.Sprintf("%d sampled rows: mean %.2g, std %.4f (HF initializer_range %.2f), excess kurtosis %.2f (Gaussian 0), row-norm spread %.1f%% (i.i.d. Gaussian %.1f%%)",
		s.SampledRows, s.Mean, s.Std, initializerRange, s.ExcessKurtosis, 100*s.RowNormCV, 100*s.GaussianRowNormCV)
	if h.Flagged {
		h.Message = fmt.Sprintf("HEURISTIC: %s looks like a fresh random initialisation, not trained weights (%s); trained output layers are heavy-tailed with row norms varying by tens of percent. This is a statistical guess from a sample.", name, stats)
	} else {
		h.Message = fmt.Sprintf("HEURISTIC: %s does not look like a fresh random initialisation (%s).", name, stats)
	}
	r.Heuristics = append(r.Heuristics, h)
}
