package qwen3

import (
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestDecodeWeightBytes counts the tiny preset by hand from its config:
// every matrix once at 2 bytes (bf16), norm vectors at 4 (widened at
// load), one embedding row at 2.
func TestDecodeWeightBytes(t *testing.T) {
	tm := tiny(t, safetensors.BF16)
	c := tm.cfg
	H, I, G := c.HiddenSize, c.IntermediateSize, c.GuardInnerSize
	hd := c.HeadDim
	q, kv := c.NumAttentionHeads*hd, c.NumKeyValueHeads*hd
	layer := 2*int64(H*q+2*H*kv+q*H+3*H*I) + 4*int64(2*H+2*hd)
	lab, err := c.Labels()
	if err != nil {
		t.Fatal(err)
	}
	head := func(levels, cats int) int64 { return 2*int64(H*G+levels*G+cats*G) + 4*int64(G) }
	want := int64(c.NumHiddenLayers)*layer +
		head(len(lab.ResponseRisk), len(lab.ResponseCategory)) + head(len(lab.QueryRisk), len(lab.QueryCategory)) +
		4*int64(H) + 2*int64(H)
	if got := tm.m.DecodeWeightBytes(); got != want {
		t.Fatalf("DecodeWeightBytes = %d, want %d", got, want)
	}
}
