package qwen3

import (
	"strconv"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// BenchmarkPrefill feeds a 64-token prompt to a fresh cache.
func BenchmarkPrefill(b *testing.B) {
	m := tiny(b, safetensors.BF16).m
	ids := testIDs(64, 5)
	c := m.NewCache()
	for b.Loop() {
		c.Truncate(0)
		if _, err := m.Forward([]Sequence{{Cache: c, IDs: ids}}, ForwardOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(ids))/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkStep times one streamed token at two cache lengths: the cost
// should grow only with the attention over the cache.
func BenchmarkStep(b *testing.B) {
	m := tiny(b, safetensors.BF16).m
	for _, pos := range []int{100, 4000} {
		b.Run("pos="+strconv.Itoa(pos), func(b *testing.B) {
			c := m.NewCache()
			if err := c.FillRandom(pos, 1); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				c.Truncate(pos)
				if _, err := m.Forward([]Sequence{{Cache: c, IDs: []int{42}}}, ForwardOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBatchedStep feeds one token to each of 16 streams per forward.
func BenchmarkBatchedStep(b *testing.B) {
	m := tiny(b, safetensors.BF16).m
	seqs := make([]Sequence, 16)
	for i := range seqs {
		seqs[i] = Sequence{Cache: m.NewCache(), IDs: []int{100 + i}}
		if err := seqs[i].Cache.FillRandom(100+i, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		for i := range seqs {
			seqs[i].Cache.Truncate(100 + i)
		}
		if _, err := m.Forward(seqs, ForwardOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(seqs))/b.Elapsed().Seconds(), "tokens/s")
}
