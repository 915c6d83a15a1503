package qwen3

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

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

// BenchmarkPrepareInAttention compares, in one process, a streamed token's
// step with its rows prepared inside the attention items (the default for
// decode batches) and in a pass of their own, switching every four steps
// so that both see the same machine; it reports each way's median step.
// It generates a 0.6B-shaped AWQ model: set STREAMGUARD_BENCH_LARGE=1.
func BenchmarkPrepareInAttention(b *testing.B) {
	if os.Getenv("STREAMGUARD_BENCH_LARGE") != "1" {
		b.Skip("set STREAMGUARD_BENCH_LARGE=1 to generate the 0.6B-shaped model")
	}
	m := generated06AWQ(b, Options{KVCache: KVBF16}) // the engine's default cache
	defer func(old bool) { separatePrepare = old }(separatePrepare)
	for _, pos := range []int{100, 4000} {
		b.Run("pos="+strconv.Itoa(pos), func(b *testing.B) {
			c := m.NewCache()
			if err := c.FillRandom(pos, 1); err != nil {
				b.Fatal(err)
			}
			var us [2][]float64
			for i := 0; b.Loop(); i++ {
				way := i / 4 % 2
				separatePrepare = way == 1
				c.Truncate(pos)
				t0 := time.Now()
				if _, err := m.Forward([]Sequence{{Cache: c, IDs: []int{42}}}, ForwardOptions{}); err != nil {
					b.Fatal(err)
				}
				us[way] = append(us[way], float64(time.Since(t0).Nanoseconds())/1e3)
			}
			for way, name := range []string{"in-items", "own-pass"} {
				if len(us[way]) > 0 {
					slices.Sort(us[way])
					b.ReportMetric(us[way][len(us[way])/2], name+"-p50-µs")
				}
			}
		})
	}
}
