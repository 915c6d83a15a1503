package qwen3

import "github.com/streamguard/streamguard/internal/kernels"

// RMSNorm is Hugging Face's Qwen3RMSNorm in float32:
// x·rsqrt(mean(x²)+eps)·w over rows of len(W).
type RMSNorm struct {
	W   []float32
	Eps float32
}

// Forward normalises each of the len(x)/len(W) rows of x into dst (which
// may alias x).
func (n *RMSNorm) Forward(dst, x []float32) {
	d := len(n.W)
	for o := 0; o+d <= len(x); o += d {
		kernels.RMSNorm(dst[o:o+d], x[o:o+d], n.W, n.Eps)
	}
}

func loadNorm(src Source, name string, dim int, eps float32) (*RMSNorm, error) {
	w, err := vectorF32(src, name, dim)
	if err != nil {
		return nil, err
	}
	return &RMSNorm{W: w, Eps: eps}, nil
}
