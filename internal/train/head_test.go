package train

import (
	"math"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// refLoss is an independent float64 implementation of the summed loss of
// the head on rows x: the spec's forward (pre, RMSNorm, classifiers) and
// cross-entropy, category terms only where a category is given.
func refLoss(p [4][]float64, H, G, L, C int, eps float64, x []float32, risk, cat []int) float64 {
	pre, norm, rw, cw := p[0], p[1], p[2], p[3]
	var total float64
	for b := range risk {
		z := make([]float64, G)
		var ss float64
		for g := range G {
			for k := range H {
				z[g] += pre[g*H+k] * float64(x[b*H+k])
			}
			ss += z[g] * z[g]
		}
		r := math.Sqrt(ss/float64(G) + eps)
		y := make([]float64, G)
		for g := range G {
			y[g] = z[g] / r * norm[g]
		}
		ce := func(w []float64, n, label int) float64 {
			logits := make([]float64, n)
			mx := math.Inf(-1)
			for i := range n {
				for g := range G {
					logits[i] += w[i*G+g] * y[g]
				}
				mx = math.Max(mx, logits[i])
			}
			var s float64
			for _, v := range logits {
				s += math.Exp(v - mx)
			}
			return math.Log(s) + mx - logits[label]
		}
		total += ce(rw, L, risk[b])
		if cat[b] >= 0 {
			total += ce(cw, C, cat[b])
		}
	}
	return total
}

func randomHead(seed uint64, H, G, L, C int) *Head {
	h := NewHead(H, G, L, C, 1e-6)
	h.InitRandom(seed, Response)
	r := newRNG(seed, "norm")
	for i := range h.Norm {
		h.Norm[i] = 1 + 0.5*r.uniform() // away from 1, so its gradient matters
	}
	return h
}

// TestGradientFiniteDifference checks the analytic gradient of every
// parameter against central differences of refLoss in float64. The
// analytic gradient runs in float32 (kernels accumulate in float32 over at
// most 11 terms of size ~1), so it is good to ~1e-6 relative; finite
// differences with step 1e-4 on a float64 loss are exact to ~1e-8. The
// bound 2e-4·max(1, |g|) + 1e-5 leaves a wide margin while catching any
// wrong term (those are off by O(|g|)).
func TestGradientFiniteDifference(t *testing.T) {
	const H, G, L, C, B = 11, 7, 3, 5, 9
	h := randomHead(3, H, G, L, C)
	r := newRNG(4, "x")
	x := make([]float32, B*H)
	for i := range x {
		x[i] = 2 * r.uniform()
	}
	risk := []int{0, 1, 2, 1, 0, 2, 2, 1, 0}
	cat := []int{-1, 3, 0, 4, -1, 1, 2, 3, -1}

	grad := NewHead(H, G, L, C, h.Eps)
	w := h.newBatch(B)
	loss := h.lossGrad(w, x, risk, cat, 1, grad)

	var p [4][]float64
	for i, tns := range h.tensors() {
		for _, v := range tns {
			p[i] = append(p[i], float64(v))
		}
	}
	want := refLoss(p, H, G, L, C, float64(h.Eps), x, risk, cat)
	if math.Abs(loss-want) > 1e-5*math.Abs(want) {
		t.Fatalf("loss %v, float64 reference %v", loss, want)
	}
	names := []string{"pre", "norm", "risk", "category"}
	const step = 1e-4
	checked := 0
	for i, g := range grad.tensors() {
		for j := range g {
			orig := p[i][j]
			p[i][j] = orig + step
			up := refLoss(p, H, G, L, C, float64(h.Eps), x, risk, cat)
			p[i][j] = orig - step
			down := refLoss(p, H, G, L, C, float64(h.Eps), x, risk, cat)
			p[i][j] = orig
			num := (up - down) / (2 * step)
			if d := math.Abs(float64(g[j]) - num); d > 2e-4*math.Max(1, math.Abs(num))+1e-5 {
				t.Errorf("%s[%d]: analytic %.8g, numeric %.8g (diff %.3g)", names[i], j, g[j], num, d)
			}
			checked++
		}
	}
	t.Logf("checked %d parameters, loss %.6f", checked, loss)
}

// TestGradientScaleAndAccumulate: scale multiplies the gradient and
// lossGrad adds to what grad holds (mini-batches accumulate).
func TestGradientScaleAndAccumulate(t *testing.T) {
	const H, G, L, C, B = 8, 4, 3, 2, 4
	h := randomHead(5, H, G, L, C)
	x := make([]float32, B*H)
	r := newRNG(6, "x")
	for i := range x {
		x[i] = r.uniform()
	}
	risk, cat := []int{1, 0, 2, 1}, []int{0, -1, 1, 1}
	w := h.newBatch(B)
	g1 := NewHead(H, G, L, C, h.Eps)
	h.lossGrad(w, x, risk, cat, 1, g1)
	g2 := NewHead(H, G, L, C, h.Eps)
	h.lossGrad(w, x, risk, cat, 0.25, g2)
	h.lossGrad(w, x, risk, cat, 0.25, g2)
	for i, a := range g1.tensors() {
		b := g2.tensors()[i]
		for j := range a {
			if d := math.Abs(float64(a[j]/2 - b[j])); d > 1e-6*math.Max(1, math.Abs(float64(a[j]))) {
				t.Fatalf("tensor %d[%d]: half of scale 1 is %v, two scale-1/4 passes give %v", i, j, a[j]/2, b[j])
			}
		}
	}
}

// TestForwardMatchesEngineHead: the trainer's forward and the engine's
// qwen3.Head (what the written model runs) give the same logits. With F32
// weights they differ only by the RMSNorm kernel's float32 sum against the
// trainer's float64 one (~1e-7 relative per row).
func TestForwardMatchesEngineHead(t *testing.T) {
	const H, G, L, C, B = 64, 32, 3, 12, 10
	h := randomHead(7, H, G, L, C)
	x := make([]float32, B*H)
	r := newRNG(8, "x")
	for i := range x {
		x[i] = 3 * r.uniform()
	}
	w := h.newBatch(B)
	h.forward(w, x, B)
	st, err := roundHead(h, HeadDTypes{safetensors.F32, safetensors.F32, safetensors.F32, safetensors.F32})
	if err != nil {
		t.Fatal(err)
	}
	eh := st.engineHead(h)
	pre := make([]float32, B*G)
	risk, cat := make([]float32, B*L), make([]float32, B*C)
	eh.Forward(x, B, pre, risk, cat)
	for b := range B {
		got := append(slices.Clone(risk[b*L:(b+1)*L]), cat[b*C:(b+1)*C]...)
		want := w.logits[b*(L+C) : (b+1)*(L+C)]
		for i := range got {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*math.Max(1, math.Abs(float64(want[i]))) {
				t.Fatalf("row %d logit %d: engine %v, trainer %v", b, i, got[i], want[i])
			}
		}
	}
}

// TestFitDeterministicAcrossThreads: the same seed gives bitwise the same
// weights with 1 and 2 kernel threads (reductions never split across
// threads), and another seed gives other weights.
func TestFitDeterministicAcrossThreads(t *testing.T) {
	const H, G, L, C, N = 256, 128, 3, 4, 300 // large enough that the kernels split work across threads
	r := newRNG(9, "x")
	x := make([]float32, N*H)
	for i := range x {
		x[i] = r.uniform()
	}
	var samples []Sample
	for i := range N {
		rk := i % 3
		c := -1
		if rk != 0 {
			c = (i / 3) % C
		}
		samples = append(samples, Sample{Row: i, Risk: rk, Category: c})
	}
	run := func(threads int, seed uint64) *Head {
		defer kernels.SetThreads(kernels.Threads())
		kernels.SetThreads(threads)
		h := NewHead(H, G, L, C, 1e-6)
		h.InitRandom(seed, Query)
		best, _, err := Fit(h, Query, Data{X: x, Samples: samples[:250]}, Data{X: x, Samples: samples[250:]},
			FitOptions{Epochs: 3, Batch: 32, LR: 1e-2, WeightDecay: 0.01, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return best
	}
	a, b, c := run(1, 1), run(2, 1), run(2, 2)
	for i, ta := range a.tensors() {
		if !slices.Equal(ta, b.tensors()[i]) {
			t.Fatalf("tensor %d differs between 1 and 2 threads", i)
		}
	}
	if slices.Equal(a.Pre, c.Pre) {
		t.Fatal("seeds 1 and 2 gave the same weights")
	}
}
