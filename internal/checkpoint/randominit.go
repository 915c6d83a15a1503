package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/streamguard/streamguard/internal/config"
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

// The sample is randomInitBlocks runs of randomInitBlockRows consecutive
// rows, evenly spaced: 2048 rows in 64 reads. Few, contiguous reads keep
// the I/O (kernel readahead included) to a few tens of MiB even for the
// 1.2 GiB lm_head of an 8B model.
const (
	randomInitBlocks    = 64
	randomInitBlockRows = 32
)

// maxSampleCols bounds the row length sampleFileRows reads, so its buffer
// is at most 32 rows × 32768 × 4 bytes = 4 MiB: hidden_size's own limit.
const maxSampleCols = config.MaxHiddenSize

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

// readRows reads rows [first, first+n) of a row-major matrix into dst.
type readRows func(first, n int, dst []byte) error

// SampleRandomInit computes RandomInitStats over blocks of rows of an
// in-memory 2-D float tensor (blocks × blockRows rows at most).
func SampleRandomInit(t *safetensors.Tensor, blocks, blockRows int) (*RandomInitStats, error) {
	if err := checkMatrix(t.Name, t.DType, t.Shape); err != nil {
		return nil, err
	}
	rowBytes := t.Shape[1] * t.DType.Size()
	if int64(len(t.Data)) != int64(t.Shape[0])*int64(rowBytes) {
		return nil, fmt.Errorf("tensor %q: %d bytes for shape %v", t.Name, len(t.Data), t.Shape)
	}
	return sampleRows(func(first, n int, dst []byte) error {
		copy(dst, t.Data[first*rowBytes:(first+n)*rowBytes])
		return nil
	}, t.DType, t.Shape[0], t.Shape[1], blocks, blockRows), nil
}

// sampleFileRows samples a tensor of a safetensors file with positioned
// reads, so only the sampled rows are read and nothing stays resident.
func sampleFileRows(path string, info safetensors.TensorInfo) (*RandomInitStats, error) {
	if err := checkMatrix(info.Name, info.DType, info.Shape); err != nil {
		return nil, err
	}
	// The buffer holds randomInitBlockRows rows: never size it by a row
	// length only a header vouches for (lmHeadHeuristic checks the shape
	// against the config; this is the bound whatever the caller).
	if info.Shape[1] > maxSampleCols {
		return nil, fmt.Errorf("tensor %q: rows of %d values, more than the %d a sample reads", info.Name, info.Shape[1], maxSampleCols)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var prefix [8]byte
	if _, err := f.ReadAt(prefix[:], 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The data buffer follows the 8-byte length and the header (Open has
	// validated both, and the tensor's extent within the file).
	base := 8 + int64(binary.LittleEndian.Uint64(prefix[:])) + info.Begin
	rowBytes := int64(info.Shape[1] * info.DType.Size())
	return sampleRows(func(first, n int, dst []byte) error {
		_, err := f.ReadAt(dst, base+int64(first)*rowBytes)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, info.Name, err)
		}
		return nil
	}, info.DType, info.Shape[0], info.Shape[1], randomInitBlocks, randomInitBlockRows), nil
}

func checkMatrix(name string, d safetensors.DType, shape []int) error {
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 {
		return fmt.Errorf("tensor %q: shape %v is not a 2-D matrix", name, shape)
	}
	switch d {
	case safetensors.F32, safetensors.F16, safetensors.BF16:
		return nil
	}
	return fmt.Errorf("tensor %q: dtype %s is not a float type", name, d)
}

// sampleRows reads up to blocks runs of blockRows consecutive rows, evenly
// spaced over the matrix, and summarises them. A failed read ends the
// sample early; the stats then cover the rows read (SampledRows says how
// many).
func sampleRows(read readRows, d safetensors.DType, rows, cols, blocks, blockRows int) *RandomInitStats {
	es := d.Size()
	per := min(blockRows, rows)
	nb := min(blocks, rows/per)
	s := &RandomInitStats{Cols: cols, GaussianRowNormCV: 1 / math.Sqrt(2*float64(cols))}
	buf := make([]byte, per*cols*es)
	var norms []float64
	// Raw power sums; the central moments follow from them. The values are
	// centred near 0, so the cancellation is harmless in float64.
	var p1, p2, p3, p4, count float64
	for b := 0; b < nb; b++ {
		first := int(int64(b) * int64(rows-per) / int64(max(nb-1, 1)))
		if read(first, per, buf) != nil {
			break
		}
		for r := 0; r < per; r++ {
			row := buf[r*cols*es : (r+1)*cols*es]
			var sq float64
			finite := true
			for j := 0; j < cols; j++ {
				var v float64
				switch d {
				case safetensors.F32:
					v = float64(math.Float32frombits(binary.LittleEndian.Uint32(row[4*j:])))
				case safetensors.F16:
					v = float64(half.F16ToF32(binary.LittleEndian.Uint16(row[2*j:])))
				default:
					v = float64(half.BF16ToF32(binary.LittleEndian.Uint16(row[2*j:])))
				}
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
			s.SampledRows++
		}
	}
	if count == 0 {
		return s
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
	return s
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
// a fresh random initialisation. It samples only an lm_head of the shape a
// valid config.json gives it, [vocab_size, hidden_size]: the sample's
// buffer is sized by the row length, and the header alone may claim any
// (a sparse file costs no disk at [1, 2^33]), while hidden_size is
// bounded by config.MaxHiddenSize.
func (r *LoadReport) lmHeadHeuristic(set *safetensors.Set, cfg *config.Config) {
	const name = "lm_head.weight"
	h := Heuristic{Tensor: name, Check: "random-init"}
	info, path, _ := set.Info(name)
	var s *RandomInitStats
	var err error
	switch want := []int{cfg.VocabSize, cfg.HiddenSize}; {
	case cfg.Validate(false) != nil:
		err = fmt.Errorf("config.json is not valid (see the problems), so the shape of %s cannot be checked", name)
	case !slices.Equal(info.Shape, want):
		err = fmt.Errorf("shape %s is not [vocab_size, hidden_size] = %s from config.json", shapeString(info.Shape), shapeString(want))
	default:
		s, err = sampleFileRows(path, info)
	}
	if err == nil && s.SampledRows == 0 {
		err = fmt.Errorf("no row could be read")
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
