package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/streamguard/streamguard/internal/kernels"
)

// Head holds the float32 master weights of one head pair, in the
// checkpoint's row-major nn.Linear layout. Its forward is the engine's
// (qwen3.Head): pre projection, RMSNorm (no activation in between), then
// the risk and category classifiers.
type Head struct {
	Hidden, Inner, Levels, Categories int
	Eps                               float32

	Pre      []float32 // [Inner][Hidden]
	Norm     []float32 // [Inner]
	Risk     []float32 // [Levels][Inner]
	Category []float32 // [Categories][Inner]
}

// NewHead allocates a zero head of the given sizes.
func NewHead(hidden, inner, levels, categories int, eps float32) *Head {
	return &Head{
		Hidden: hidden, Inner: inner, Levels: levels, Categories: categories, Eps: eps,
		Pre: make([]float32, inner*hidden), Norm: make([]float32, inner),
		Risk: make([]float32, levels*inner), Category: make([]float32, categories*inner),
	}
}

// Clone returns a deep copy.
func (h *Head) Clone() *Head {
	c := *h
	c.Pre, c.Norm, c.Risk, c.Category = slices.Clone(h.Pre), slices.Clone(h.Norm), slices.Clone(h.Risk), slices.Clone(h.Category)
	return &c
}

// tensors lists the parameter slices in a fixed order (pre, norm, risk,
// category), for the optimizer and the gradient check.
func (h *Head) tensors() [][]float32 { return [][]float32{h.Pre, h.Norm, h.Risk, h.Category} }

// finite reports the first parameter that is not a finite number.
func (h *Head) finite() error {
	for i, t := range h.tensors() {
		for j, v := range t {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("%s[%d] is %v", []string{"pre", "norm", "risk", "category"}[i], j, v)
			}
		}
	}
	return nil
}

// batch is the scratch of one forward/backward over B rows. Every
// reduction runs in a fixed order (the matrix kernels split work by output
// element, never by the summed index), so results do not depend on the
// number of threads.
type batch struct {
	B                   int
	z, n, y             []float32 // [B][Inner]: pre-norm, normed, scaled by Norm
	inv                 []float32 // [B]: 1/rms of each row of z
	logits              []float32 // [B][Levels+Categories]
	dlog                []float32 // [B][Levels+Categories]
	dlogT               []float32 // [Levels+Categories][B]
	yT                  []float32 // [Inner][B]
	clsT                []float32 // [Inner][Levels+Categories]: the classifiers transposed
	dy, dz, dzT         []float32 // [B][Inner], [B][Inner], [Inner][B]
	xT                  []float32 // [Hidden][B]
	dcls                []float32 // [Levels+Categories][Inner]
	cls                 []float32 // [Levels+Categories][Inner]: risk rows then category rows
	dpre                []float32 // [Inner][Hidden]
	riskLoss, catLoss   float64
	riskRight, catRight int
	catCount            int
}

func (h *Head) newBatch(B int) *batch {
	K := h.Levels + h.Categories
	G := h.Inner
	return &batch{
		B: B, z: make([]float32, B*G), n: make([]float32, B*G), y: make([]float32, B*G), inv: make([]float32, B),
		logits: make([]float32, B*K), dlog: make([]float32, B*K), dlogT: make([]float32, K*B),
		yT: make([]float32, G*B), clsT: make([]float32, G*K), dy: make([]float32, B*G), dz: make([]float32, B*G),
		dzT: make([]float32, G*B), xT: make([]float32, h.Hidden*B), dcls: make([]float32, K*G), cls: make([]float32, K*G),
		dpre: make([]float32, G*h.Hidden),
	}
}

// forward computes the logits of the B rows of x ([B][Hidden]) into
// w.logits: risk logits then category logits per row.
func (h *Head) forward(w *batch, x []float32, B int) {
	G, K := h.Inner, h.Levels+h.Categories
	kernels.MatMulF32(w.z[:B*G], x[:B*h.Hidden], h.Pre, B, h.Hidden, G)
	for b := range B {
		z := w.z[b*G : (b+1)*G]
		var ss float64
		for _, v := range z {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(G)+float64(h.Eps)))
		w.inv[b] = inv
		n, y := w.n[b*G:(b+1)*G], w.y[b*G:(b+1)*G]
		for g, v := range z {
			n[g] = v * inv
			y[g] = n[g] * h.Norm[g]
		}
	}
	copy(w.cls, h.Risk)
	copy(w.cls[h.Levels*G:], h.Category)
	kernels.MatMulF32(w.logits[:B*K], w.y[:B*G], w.cls, B, G, K)
}

// lossGrad runs forward and backward over the B rows of x with labels risk
// and category (-1: no category loss) and adds the gradient of the summed
// loss, times scale, to grad. The loss of a row is the cross-entropy of its
// risk plus, where its category is not -1, the cross-entropy of its
// category. It returns the summed loss.
func (h *Head) lossGrad(w *batch, x []float32, risk, category []int, scale float32, grad *Head) float64 {
	B := len(risk)
	G, K, H := h.Inner, h.Levels+h.Categories, h.Hidden
	h.forward(w, x, B)
	loss := w.losses(h.Levels, risk, category, scale)

	// Classifier gradients: dcls[k][g] = Σ_b dlog[b][k]·y[b][g].
	transpose(w.dlogT[:K*B], w.dlog[:B*K], B, K)
	transpose(w.yT[:G*B], w.y[:B*G], B, G)
	kernels.MatMulF32(w.dcls, w.dlogT[:K*B], w.yT[:G*B], K, B, G)
	addTo(grad.Risk, w.dcls[:h.Levels*G])
	addTo(grad.Category, w.dcls[h.Levels*G:])

	// dy[b][g] = Σ_k dlog[b][k]·cls[k][g].
	transpose(w.clsT, w.cls, K, G)
	kernels.MatMulF32(w.dy[:B*G], w.dlog[:B*K], w.clsT, B, K, G)

	// Norm weight and RMSNorm backward: n = z·inv, y = n·g,
	// dz = inv·(dn − n·mean(dn·n)).
	for g := range G {
		var s float32
		for b := range B {
			s += w.dy[b*G+g] * w.n[b*G+g]
		}
		grad.Norm[g] += s
	}
	for b := range B {
		dy, n, dz := w.dy[b*G:(b+1)*G], w.n[b*G:(b+1)*G], w.dz[b*G:(b+1)*G]
		var dot float64
		for g := range G {
			dn := dy[g] * h.Norm[g]
			dz[g] = dn
			dot += float64(dn) * float64(n[g])
		}
		m := float32(dot / float64(G))
		inv := w.inv[b]
		for g := range G {
			dz[g] = inv * (dz[g] - n[g]*m)
		}
	}

	// dPre[g][k] = Σ_b dz[b][g]·x[b][k].
	transpose(w.dzT[:G*B], w.dz[:B*G], B, G)
	transpose(w.xT[:H*B], x[:B*H], B, H)
	kernels.MatMulF32(w.dpre, w.dzT[:G*B], w.xT[:H*B], G, B, H)
	addTo(grad.Pre, w.dpre)
	return loss
}

// losses fills w.dlog with scale·∂loss/∂logits and returns the summed loss
// of the rows, tallying argmax hits on the way.
func (w *batch) losses(levels int, risk, category []int, scale float32) float64 {
	B := len(risk)
	K := len(w.dlog) / w.B
	var total float64
	w.riskLoss, w.catLoss, w.riskRight, w.catRight, w.catCount = 0, 0, 0, 0, 0
	for b := range B {
		lg, d := w.logits[b*K:(b+1)*K], w.dlog[b*K:(b+1)*K]
		l, hit := crossEntropy(d[:levels], lg[:levels], risk[b], scale)
		w.riskLoss += l
		if hit {
			w.riskRight++
		}
		total += l
		if c := category[b]; c >= 0 {
			l, hit := crossEntropy(d[levels:], lg[levels:], c, scale)
			w.catLoss += l
			w.catCount++
			if hit {
				w.catRight++
			}
			total += l
		} else {
			clear(d[levels:])
		}
	}
	return total
}

// crossEntropy writes scale·(softmax(logits) − onehot(label)) to d and
// returns −log softmax(logits)[label], computed in float64, and whether
// label is the argmax.
func crossEntropy(d, logits []float32, label int, scale float32) (float64, bool) {
	mx := math.Inf(-1)
	best := 0
	for i, v := range logits {
		if float64(v) > mx {
			mx, best = float64(v), i
		}
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	for i, v := range logits {
		p := math.Exp(float64(v)-mx) / sum
		if i == label {
			p--
		}
		d[i] = float32(p) * scale
	}
	return math.Log(sum) - (float64(logits[label]) - mx), best == label
}

func addTo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// transpose writes the [cols][rows] transpose of src ([rows][cols]) to dst.
func transpose(dst, src []float32, rows, cols int) {
	const tile = 32
	for r0 := 0; r0 < rows; r0 += tile {
		for c0 := 0; c0 < cols; c0 += tile {
			for r := r0; r < min(r0+tile, rows); r++ {
				for c := c0; c < min(c0+tile, cols); c++ {
					dst[c*rows+r] = src[r*cols+c]
				}
			}
		}
	}
}

// zero clears every parameter (used on gradient accumulators).
func (h *Head) zero() {
	for _, t := range h.tensors() {
		clear(t)
	}
}
