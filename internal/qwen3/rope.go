package qwen3

import "math"

// RoPE holds the rotary position tables for every position up to the
// model's maximum: cos and sin of position·inv_freq_i, i < head_dim/2, in
// the NeoX ("rotate half") layout where dimension i pairs with i+head_dim/2.
type RoPE struct {
	half int
	cos  []float32 // [maxPos][half]
	sin  []float32
}

// NewRoPE computes the tables in float64 and rounds once to float32, so the
// angles are as exact as float32 allows at every position.
func NewRoPE(headDim, maxPos int, theta float64) *RoPE {
	half := headDim / 2
	r := &RoPE{half: half, cos: make([]float32, maxPos*half), sin: make([]float32, maxPos*half)}
	inv := make([]float64, half)
	for i := range inv {
		inv[i] = math.Pow(theta, -float64(2*i)/float64(headDim))
	}
	for p := range maxPos {
		row := p * half
		for i, f := range inv {
			s, c := math.Sincos(float64(p) * f)
			r.cos[row+i] = float32(c)
			r.sin[row+i] = float32(s)
		}
	}
	return r
}

// At returns the cos and sin rows for position pos.
func (r *RoPE) At(pos int) (cos, sin []float32) {
	o := pos * r.half
	return r.cos[o : o+r.half], r.sin[o : o+r.half]
}

// Bytes is the memory the tables occupy.
func (r *RoPE) Bytes() int64 { return int64(len(r.cos)+len(r.sin)) * 4 }
