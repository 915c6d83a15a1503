package train

import "testing"

// BenchmarkLossGrad is one mini-batch of 64 at the 0.6B head shape
// (hidden 1024, guard_inner_size 512, 3 risk levels, 12 categories):
// forward, backward and the AdamW step, the whole inner loop of training.
func BenchmarkLossGrad(b *testing.B) {
	const H, G, L, C, B = 1024, 512, 3, 12, 64
	h := NewHead(H, G, L, C, 1e-6)
	h.InitRandom(1, Response)
	grad := NewHead(H, G, L, C, 1e-6)
	opt := NewAdamW(h, 1e-3, 0.01)
	r := newRNG(2, "x")
	x := make([]float32, B*H)
	for i := range x {
		x[i] = r.uniform()
	}
	risk, cat := make([]int, B), make([]int, B)
	for i := range risk {
		risk[i] = i % L
		cat[i] = -1
		if risk[i] != 0 {
			cat[i] = i % C
		}
	}
	w := h.newBatch(B)
	for b.Loop() {
		grad.zero()
		h.lossGrad(w, x, risk, cat, 1.0/B, grad)
		opt.Step(h, grad)
	}
	b.ReportMetric(float64(B*b.N)/b.Elapsed().Seconds(), "samples/s")
}
