package qwen3

import (
	"fmt"
	"math"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
)

// refOutputs is a straightforward float64 forward over a whole sequence,
// written from the spec independently of the packed/batched code path.
type refOutputs struct {
	hidden, risk, cat, qrisk, qcat [][]float64
}

func refForward(t *testing.T, src Source, cfg *config.Config, ids []int) refOutputs {
	t.Helper()
	get := func(name string) []float64 {
		tt, err := src.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	H, hd, nh, nkv, I := cfg.HiddenSize, cfg.HeadDim, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.IntermediateSize
	eps := cfg.RMSNormEps
	rms := func(x, w []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+eps)
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] * r * w[i]
		}
		return out
	}
	lin := func(w, x []float64, out int) []float64 {
		in := len(x)
		y := make([]float64, out)
		for o := range out {
			var s float64
			for k := range in {
				s += w[o*in+k] * x[k]
			}
			y[o] = s
		}
		return y
	}
	rope := func(x []float64, pos int) {
		half := hd / 2
		for i := range half {
			f := float64(pos) * math.Pow(cfg.RopeTheta, -float64(2*i)/float64(hd))
			c, s := math.Cos(f), math.Sin(f)
			a, b := x[i], x[i+half]
			x[i], x[i+half] = a*c-b*s, b*c+a*s
		}
	}
	T := len(ids)
	emb := get("model.embed_tokens.weight")
	h := make([][]float64, T)
	for t, id := range ids {
		h[t] = append([]float64{}, emb[id*H:(id+1)*H]...)
	}
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		wq, wk, wv, wo := get(p+"self_attn.q_proj.weight"), get(p+"self_attn.k_proj.weight"), get(p+"self_attn.v_proj.weight"), get(p+"self_attn.o_proj.weight")
		qn, kn := get(p+"self_attn.q_norm.weight"), get(p+"self_attn.k_norm.weight")
		in, post := get(p+"input_layernorm.weight"), get(p+"post_attention_layernorm.weight")
		wg, wu, wd := get(p+"mlp.gate_proj.weight"), get(p+"mlp.up_proj.weight"), get(p+"mlp.down_proj.weight")
		qs, ks, vs := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			x := rms(h[t], in)
			q, k, v := lin(wq, x, nh*hd), lin(wk, x, nkv*hd), lin(wv, x, nkv*hd)
			for hh := range nh {
				copy(q[hh*hd:], rms(q[hh*hd:(hh+1)*hd], qn))
				rope(q[hh*hd:(hh+1)*hd], t)
			}
			for hh := range nkv {
				copy(k[hh*hd:], rms(k[hh*hd:(hh+1)*hd], kn))
				rope(k[hh*hd:(hh+1)*hd], t)
			}
			qs[t], ks[t], vs[t] = q, k, v
		}
		for t := range T {
			att := make([]float64, nh*hd)
			for hh := range nh {
				kv := hh / (nh / nkv)
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := 0; j <= t; j++ {
					var s float64
					for d := range hd {
						s += qs[t][hh*hd+d] * ks[j][kv*hd+d]
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for d := range hd {
						att[hh*hd+d] += sc[j] / sum * vs[j][kv*hd+d]
					}
				}
			}
			o := lin(wo, att, H)
			for i := range H {
				h[t][i] += o[i]
			}
			x := rms(h[t], post)
			g, u := lin(wg, x, I), lin(wu, x, I)
			for i := range I {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := lin(wd, g, H)
			for i := range H {
				h[t][i] += d[i]
			}
		}
	}
	var out refOutputs
	norm := get("model.norm.weight")
	G := cfg.GuardInnerSize
	head := func(pre, ln, risk, cat string, nr, nc int, hs []float64) ([]float64, []float64) {
		x := rms(lin(get(pre), hs, G), get(ln))
		return lin(get(risk), x, nr), lin(get(cat), x, nc)
	}
	lb, _ := cfg.Labels()
	for t := range T {
		hs := rms(h[t], norm)
		out.hidden = append(out.hidden, hs)
		r, c := head("risk_level_category_pre.weight", "risk_level_category_layernorm.weight", "risk_level_head.weight", "category_head.weight", len(lb.ResponseRisk), len(lb.ResponseCategory), hs)
		qr, qc := head("query_risk_level_category_pre.weight", "query_risk_level_category_layernorm.weight", "query_risk_level_head.weight", "query_category_head.weight", len(lb.QueryRisk), len(lb.QueryCategory), hs)
		out.risk, out.cat, out.qrisk, out.qcat = append(out.risk, r), append(out.cat, c), append(out.qrisk, qr), append(out.qcat, qc)
	}
	return out
}

// relL2 is ‖a−b‖/‖b‖.
func relL2(a []float32, b []float64) float64 {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - b[i]
		num += d * d
		den += b[i] * b[i]
	}
	return math.Sqrt(num / den)
}
