package qwen3

import (
	"math"
	"sync/atomic"
)

// ropeChunk is the number of positions one block of the tables holds.
const ropeChunk = 512

// RoPE holds the rotary position tables: cos and sin of position·inv_freq_i,
// i < head_dim/2, in the NeoX ("rotate half") layout where dimension i pairs
// with i+head_dim/2. The tables are computed a block of ropeChunk positions
// at a time, on first use, so a model's memory does not grow with
// max_position_embeddings but with the longest sequence it has seen.
type RoPE struct {
	half   int
	inv    []float64
	blocks []atomic.Pointer[ropeBlock] // ceil(maxPos / ropeChunk)
	bytes  atomic.Int64
}

// ropeBlock is the tables of ropeChunk consecutive positions.
type ropeBlock struct {
	cos, sin []float32 // [ropeChunk][half]
}

// NewRoPE prepares the tables for positions 0..maxPos-1; it computes none
// of them yet.
func NewRoPE(headDim, maxPos int, theta float64) *RoPE {
	half := headDim / 2
	r := &RoPE{half: half, inv: make([]float64, half),
		blocks: make([]atomic.Pointer[ropeBlock], (maxPos+ropeChunk-1)/ropeChunk)}
	for i := range r.inv {
		r.inv[i] = math.Pow(theta, -float64(2*i)/float64(headDim))
	}
	return r
}

// At returns the cos and sin rows for position pos. It is safe for
// concurrent use.
func (r *RoPE) At(pos int) (cos, sin []float32) {
	b := r.blocks[pos/ropeChunk].Load()
	if b == nil {
		b = r.fill(pos / ropeChunk)
	}
	o := pos % ropeChunk * r.half
	return b.cos[o : o+r.half], b.sin[o : o+r.half]
}

// fill computes block i in float64 and rounds once to float32, so the
// angles are as exact as float32 allows at every position. Concurrent
// callers may both compute it; the values are the same and the first
// stored wins.
func (r *RoPE) fill(i int) *ropeBlock {
	n := ropeChunk * r.half
	b := &ropeBlock{cos: make([]float32, n), sin: make([]float32, n)}
	for j := range ropeChunk {
		p, row := i*ropeChunk+j, j*r.half
		for k, f := range r.inv {
			s, c := math.Sincos(float64(p) * f)
			b.cos[row+k] = float32(c)
			b.sin[row+k] = float32(s)
		}
	}
	if r.blocks[i].CompareAndSwap(nil, b) {
		r.bytes.Add(int64(2*n) * 4)
		return b
	}
	return r.blocks[i].Load()
}

// Bytes is the memory the tables computed so far occupy.
func (r *RoPE) Bytes() int64 { return r.bytes.Load() }
