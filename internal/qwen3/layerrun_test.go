package qwen3

import (
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestLayerRunnerMatchesForward walks two sequences through the model one
// layer at a time with a LayerRunner, then the final norm, and compares
// with the cached batched forward: bitwise equal, since both run the same
// float32 operations per row (batch invariance). Running each layer as its
// attention and MLP blocks separately must agree bitwise too.
func TestLayerRunnerMatchesForward(t *testing.T) {
	tm := tiny(t, safetensors.BF16)
	m := tm.m
	seqs := [][]int{testIDs(19, 3), testIDs(7, 4)}
	var want [][]float32
	for _, ids := range seqs {
		outs, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, outs[0].Hidden...)
	}

	H := m.Hidden()
	r, err := m.NewLayerRunner([]int{len(seqs[0]), len(seqs[1])})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Tokens() != 26 {
		t.Fatalf("Tokens() = %d, want 26", r.Tokens())
	}
	h := make([]float32, r.Tokens()*H)
	h2 := make([]float32, len(h))
	t0 := 0
	for _, ids := range seqs {
		for _, id := range ids {
			m.Embed.Lookup(h[t0*H:(t0+1)*H], id)
			t0++
		}
	}
	copy(h2, h)
	xn, o := make([]float32, len(h)), make([]float32, len(h))
	for _, l := range m.Layers {
		r.Layer(l, h)
		// The same layer as its two blocks.
		l.AttnNorm.Forward(xn, h2)
		r.Attention(l.Attn, xn, o)
		addInPlace(h2, o)
		l.MLPNorm.Forward(xn, h2)
		r.MLP(l.MLP, xn, o)
		addInPlace(h2, o)
	}
	m.Norm.Forward(h, h)
	m.Norm.Forward(h2, h2)
	for t1, w := range want {
		for i, v := range w {
			if h[t1*H+i] != v || h2[t1*H+i] != v {
				t.Fatalf("token %d, dim %d: runner %v, blocks %v, forward %v", t1, i, h[t1*H+i], h2[t1*H+i], v)
			}
		}
	}
	if _, err := m.NewLayerRunner([]int{3, 0}); err == nil {
		t.Error("empty sequence accepted")
	}
	if _, err := m.NewLayerRunner([]int{m.MaxPositions + 1}); err == nil {
		t.Error("over-long sequence accepted")
	}
}
