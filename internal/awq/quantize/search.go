package quantize

import (
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// scaleGroup is one AWQ scaling group (AutoAWQ's grouping): Linears that
// share an input, whose output the loss compares through inspect.
type scaleGroup struct {
	name string
	lins []*mat
	orig []qwen3.Linear // the source projections of lins
	x    []float32      // captured input over all calibration tokens [Tc][K]
	// inspect runs the module on the search tokens with the given
	// projections in place of lins, writing [Ts][outDim].
	inspect func(c []qwen3.Linear, out []float32)
	outDim  int
}

// searchScales finds the best per-input scales of every group of the
// layer on its original weights, then applies them all: 1/s is folded
// into input_layernorm, post_attention_layernorm, up_proj (for down_proj)
// and v_proj (for o_proj, only when the shapes allow), s into the columns
// of the group's Linears, and the captured inputs are divided by s for
// the clipping search.
func (r *run) searchScales(lw *layerWeights, src *qwen3.Layer, caps *captures, st *LayerStats) error {
	cfg := r.cfg
	H, qd, kvd, inter := cfg.HiddenSize, cfg.NumAttentionHeads*cfg.HeadDim, cfg.NumKeyValueHeads*cfg.HeadDim, cfg.IntermediateSize
	runner, err := r.model.NewLayerRunner(r.search)
	if err != nil {
		return err
	}
	defer runner.Close()
	Ts := runner.Tokens()
	// The unmodified projections run in their stored dtype (half the
	// bytes of the float32 copies for BF16 sources, the same values).
	a, mlp := src.Attn, src.MLP
	origO, origDown := a.O, mlp.Down
	groups := []*scaleGroup{{
		name: "attn", lins: []*mat{lw.q, lw.k, lw.v}, orig: []qwen3.Linear{a.Q, a.K, a.V}, x: caps.attn, outDim: H,
		inspect: func(c []qwen3.Linear, out []float32) {
			runner.Attention(&qwen3.Attention{Q: c[0], K: c[1], V: c[2], O: origO, QNorm: a.QNorm, KNorm: a.KNorm,
				Heads: a.Heads, KVHeads: a.KVHeads, HeadDim: a.HeadDim}, caps.attn[:Ts*H], out)
		},
	}}
	// v → o only when v_proj and o_proj have the same shape (no GQA):
	// otherwise o's inputs are not v's outputs one to one.
	vo := kvd == H && qd == H
	if vo {
		groups = append(groups, &scaleGroup{name: "o", lins: []*mat{lw.o}, orig: []qwen3.Linear{a.O}, x: caps.o, outDim: H,
			inspect: func(c []qwen3.Linear, out []float32) { c[0].Forward(out, caps.o[:Ts*qd], Ts) }})
	}
	groups = append(groups,
		&scaleGroup{name: "mlp", lins: []*mat{lw.gate, lw.up}, orig: []qwen3.Linear{mlp.Gate, mlp.Up}, x: caps.mlp, outDim: H,
			inspect: func(c []qwen3.Linear, out []float32) {
				runner.MLP(&qwen3.MLP{Gate: c[0], Up: c[1], Down: origDown, Inter: inter}, caps.mlp[:Ts*H], out)
			}},
		&scaleGroup{name: "down", lins: []*mat{lw.down}, orig: []qwen3.Linear{mlp.Down}, x: caps.down, outDim: H,
			inspect: func(c []qwen3.Linear, out []float32) { c[0].Forward(out, caps.down[:Ts*inter], Ts) }},
	)
	st.Ratios, st.Loss = map[string]float64{}, map[string]float64{}
	scales := map[string][]float32{}
	for gi, g := range groups {
		r.prog.set(float64(st.Layer)+float64(gi)/float64(len(groups)+1), fmt.Sprintf("layer %d/%d scale search %s", st.Layer+1, r.res.Layers, g.name))
		s, ratio, loss, err := r.bestScale(g, Ts)
		if err != nil {
			return fmt.Errorf("scale search %s: %w", g.name, err)
		}
		scales[g.name], st.Ratios[g.name], st.Loss[g.name] = s, ratio, loss
	}

	s := scales["attn"]
	divide(lw.ln1, s)
	for _, m := range []*mat{lw.q, lw.k, lw.v} {
		m.scaleCols(s)
	}
	scaleRows(caps.attn, s)
	if vo {
		s = scales["o"]
		lw.v.divRows(s)
		lw.o.scaleCols(s)
		scaleRows(caps.o, s)
	}
	s = scales["mlp"]
	divide(lw.ln2, s)
	lw.gate.scaleCols(s)
	lw.up.scaleCols(s)
	scaleRows(caps.mlp, s)
	s = scales["down"]
	lw.up.divRows(s)
	lw.down.scaleCols(s)
	scaleRows(caps.down, s)
	return nil
}

func divide(v, s []float32) {
	for i := range v {
		v[i] /= s[i]
	}
}

// bestScale tries the 20 grid ratios with duo scaling and returns the
// scales with the lowest output mean squared error on the search tokens.
func (r *run) bestScale(g *scaleGroup, Ts int) ([]float32, float64, float64, error) {
	K := g.lins[0].K
	xMean := meanAbs(g.x, K)
	wMean, err := weightMean(g.lins, r.group)
	if err != nil {
		return nil, 0, 0, err
	}
	ref := make([]float32, Ts*g.outDim)
	g.inspect(g.orig, ref)
	y := make([]float32, len(ref))
	best, bestRatio := math.Inf(1), -1.0
	s, cand := make([]float32, K), make([]float32, K)
	packs := make([]*awq.Packed, len(g.lins))
	for i := range awq.GridPoints {
		ratio := awq.GridRatio(i)
		awq.ScaleCandidate(cand, xMean, wMean, ratio, true)
		cs, err := candidates(g.lins, cand, r.group, r.o.SearchKernel, packs)
		if err != nil {
			return nil, 0, 0, err
		}
		g.inspect(cs, y)
		if l := mse(ref, y); l < best {
			best, bestRatio = l, ratio
			copy(s, cand)
		}
	}
	if bestRatio < 0 {
		return nil, 0, 0, fmt.Errorf("no grid ratio gives a finite output error (%s)", g.lins[0].name)
	}
	return s, bestRatio, best, nil
}

// mse is mean((a−b)²) in float64.
func mse(a, b []float32) float64 {
	var s float64
	for i, x := range a {
		d := float64(x) - float64(b[i])
		s += d * d
	}
	return s / float64(max(len(a), 1))
}

// clipLayer runs the clipping search on every Linear except q_proj and
// k_proj (AutoAWQ skips query/key: their errors are squashed by the
// per-head norm and softmax rather than seen linearly).
func (r *run) clipLayer(lw *layerWeights, caps *captures) error {
	cfg := r.cfg
	H, qd, inter := cfg.HiddenSize, cfg.NumAttentionHeads*cfg.HeadDim, cfg.IntermediateSize
	T := len(caps.attn) / H
	for _, x := range []struct {
		in   []float32
		K    int
		mats []*mat
	}{
		{caps.attn, H, []*mat{lw.v}},
		{caps.o, qd, []*mat{lw.o}},
		{caps.mlp, H, []*mat{lw.gate, lw.up}},
		{caps.down, inter, []*mat{lw.down}},
	} {
		gr := newGram(x.in, T, x.K, r.group)
		for _, m := range x.mats {
			if err := clip(m, gr); err != nil {
				return err
			}
		}
	}
	return nil
}
