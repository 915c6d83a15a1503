package quantize

import (
	"context"
	"fmt"
	"math"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// Quality compares the INT4 bundle with its source on held-out
// conversations, position by position.
type Quality struct {
	Conversations int           `json:"conversations"`
	Positions     int           `json:"positions"`
	Heads         []HeadQuality `json:"heads"`
	// HiddenRelErr is ‖h_int4 − h_src‖ / ‖h_src‖ of the final normed
	// hidden state (what the heads read), mean and max over positions.
	HiddenRelErrMean float64 `json:"hidden_rel_err_mean"`
	HiddenRelErrMax  float64 `json:"hidden_rel_err_max"`
}

// HeadQuality is one guard head's agreement and divergence.
type HeadQuality struct {
	Head string `json:"head"`
	// Agreement is the fraction of positions whose argmax label is the
	// same in both models.
	Agreement float64 `json:"agreement"`
	// VerdictAgreement restricts it to the positions whose verdicts are
	// read: the prompt's closing <|im_end|> for the query heads, the
	// response content tokens for the response heads.
	VerdictAgreement float64 `json:"verdict_agreement"`
	VerdictPositions int     `json:"verdict_positions"`
	// KL(p_src ‖ p_int4) of the softmax distributions, mean and max over
	// positions, in nats.
	KLMean float64 `json:"kl_mean"`
	KLMax  float64 `json:"kl_max"`
}

// HeadNames of Quality.Heads, in order.
var qualityHeads = []string{"response risk", "response category", "query risk", "query category"}

// outputs are one model's logits and final hidden states for one
// conversation: [head][position][class] and [position][hidden].
type outputs struct {
	heads  [4][][]float32
	hidden [][]float32
}

// sourceOutputs finishes the source forward of the held-out tokens (the
// layers ran during quantization): final norm and the 8 heads.
func (r *run) sourceOutputs() ([]outputs, error) {
	m, H := r.model, r.cfg.HiddenSize
	h := r.hEval
	flat, err := m.Finish(h)
	if err != nil {
		return nil, err
	}
	R, Q := m.Response, m.Query
	sizes := [4]int{R.Levels(), R.Categories(), Q.Levels(), Q.Categories()}
	out := make([]outputs, len(r.eval))
	t := 0
	for i, e := range r.eval {
		for p := range e.ids {
			for j, n := range sizes {
				out[i].heads[j] = append(out[i].heads[j], flat[j][(t+p)*n:(t+p+1)*n])
			}
			out[i].hidden = append(out[i].hidden, h[(t+p)*H:(t+p+1)*H])
		}
		t += len(e.ids)
	}
	return out, nil
}

// evaluate loads the bundle in dir the way every streamguard command does
// (strict report, INT4 kernels), runs the held-out conversations and
// compares with the source outputs.
func evaluate(dir string, seqs []evalSeq, src []outputs) (*Quality, error) {
	g, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		return nil, err
	}
	defer g.Close()
	net := guardhook.Network(g)
	got := make([]outputs, len(seqs))
	for i, e := range seqs {
		o, err := net.Forward([]qwen3.Sequence{{Cache: net.NewCache(), IDs: e.ids}}, qwen3.ForwardOptions{Hidden: true})
		if err != nil {
			return nil, fmt.Errorf("held-out conversation %d: %w", i+1, err)
		}
		got[i] = outputs{heads: [4][][]float32{o[0].Risk, o[0].Category, o[0].QueryRisk, o[0].QueryCategory}, hidden: o[0].Hidden}
	}
	return compare(seqs, src, got), nil
}

// compare computes the quality metrics of q against the reference src.
func compare(seqs []evalSeq, src, q []outputs) *Quality {
	res := &Quality{Conversations: len(seqs)}
	type acc struct {
		agree, n, vAgree, vN int
		kl, klMax            float64
	}
	var hs [4]acc
	var relSum float64
	for i, e := range seqs {
		for p := range e.ids {
			res.Positions++
			for h := range hs {
				a, b := src[i].heads[h][p], q[i].heads[h][p]
				same := argmax(a) == argmax(b)
				hs[h].n++
				if same {
					hs[h].agree++
				}
				verdict := h >= 2 && p == e.userEnd || h < 2 && p >= e.respFrom && p < e.respTo
				if verdict {
					hs[h].vN++
					if same {
						hs[h].vAgree++
					}
				}
				kl := klDiv(a, b)
				hs[h].kl += kl
				hs[h].klMax = max(hs[h].klMax, kl)
			}
			rel := relErr(src[i].hidden[p], q[i].hidden[p])
			relSum += rel
			res.HiddenRelErrMax = max(res.HiddenRelErrMax, rel)
		}
	}
	for h, a := range hs {
		hq := HeadQuality{Head: qualityHeads[h], VerdictPositions: a.vN, KLMax: a.klMax}
		if a.n > 0 {
			hq.Agreement = float64(a.agree) / float64(a.n)
			hq.KLMean = a.kl / float64(a.n)
		}
		if a.vN > 0 {
			hq.VerdictAgreement = float64(a.vAgree) / float64(a.vN)
		}
		res.Heads = append(res.Heads, hq)
	}
	if res.Positions > 0 {
		res.HiddenRelErrMean = relSum / float64(res.Positions)
	}
	return res
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// logSoftmax in float64.
func logSoftmax(v []float32) []float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, float64(x))
	}
	var s float64
	for _, x := range v {
		s += math.Exp(float64(x) - m)
	}
	out := make([]float64, len(v))
	lse := m + math.Log(s)
	for i, x := range v {
		out[i] = float64(x) - lse
	}
	return out
}

// klDiv is KL(softmax(p) ‖ softmax(q)).
func klDiv(p, q []float32) float64 {
	lp, lq := logSoftmax(p), logSoftmax(q)
	var kl float64
	for i := range lp {
		kl += math.Exp(lp[i]) * (lp[i] - lq[i])
	}
	return max(kl, 0)
}

func relErr(ref, got []float32) float64 {
	var num, den float64
	for i, x := range ref {
		d := float64(got[i]) - float64(x)
		num += d * d
		den += float64(x) * float64(x)
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}
