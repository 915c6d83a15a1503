package bench

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestRunReportsEveryMeasurement checks the report's structure on the tiny
// preset (no timing is asserted, only that each measurement ran).
func TestRunReportsEveryMeasurement(t *testing.T) {
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src, err := qwen3.RandomSource(cfg, safetensors.BF16, 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := qwen3.Load(src, cfg, qwen3.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(m, "tiny", "bf16", time.Second, Options{Prefill: 16, Positions: []int{10, 300}, Streams: []int{2, 3}, Steps: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.PrefillTokens != 16 || r.PrefillTokensPerS <= 0 || r.LoadSeconds != 1 || r.KVBytesPerToken != 512 {
		t.Errorf("report %+v", r)
	}
	if len(r.Decode) != 2 || r.Decode[1].Position != 300 || r.Decode[1].KVBytes < 301*512 || r.Decode[1].KVReadBytes != 301*512 || r.DecodeTokensPerS != r.Decode[0].TokensPerS {
		t.Errorf("decode %+v", r.Decode)
	}
	for _, d := range r.Decode {
		// Two steps: their median is their mean (to the nanosecond the
		// durations are kept in), and neither is below the fastest.
		if !(d.MinMs > 0 && d.MinMs <= d.MedianMs && math.Abs(d.MedianMs-d.MsPerToken) < 1e-5) {
			t.Errorf("position %d: min %g, median %g, mean %g ms", d.Position, d.MinMs, d.MedianMs, d.MsPerToken)
		}
	}
	// 4 GiB over 4000-token streams of 512 bytes per token.
	if r.KVCache != "f32" || r.KVBudgetBytes != 4<<30 || r.KVStreamTokens != 4000 || r.KVStreamsInBudget != (4<<30)/(4000*512) {
		t.Errorf("KV figures %q %d %d %d", r.KVCache, r.KVBudgetBytes, r.KVStreamTokens, r.KVStreamsInBudget)
	}
	if len(r.Batched) != 2 || r.BatchedTokensPerS["3"] <= 0 || r.BatchedTokensPerS["2"] <= 0 {
		t.Errorf("batched %+v", r.BatchedTokensPerS)
	}
	// The growth of a step with the cache, against the first position.
	if d := r.Decode; d[0].MedianOverFirst != 1 || d[1].MedianOverFirst != d[1].MedianMs/d[0].MedianMs {
		t.Errorf("median over first: %g, %g (medians %g, %g ms)", d[0].MedianOverFirst, d[1].MedianOverFirst, d[0].MedianMs, d[1].MedianMs)
	}
	for _, b := range r.Batched {
		// Two steps: the median is their mean, and the mean over the whole
		// loop holds both steps and what ran between them, so it is no less.
		if !(b.MedianMsPerStep > 0 && b.MedianMsPerStep <= b.MsPerStep+1e-9) {
			t.Errorf("%d streams: median %g, mean %g ms per step", b.Streams, b.MedianMsPerStep, b.MsPerStep)
		}
		// Batched at the first position, where one stream was timed too.
		if want := float64(b.Streams) * r.Decode[0].MedianMs / b.MedianMsPerStep; b.Position != 10 || b.OverSingle != want {
			t.Errorf("%d streams at position %d: %g× one stream, want %g", b.Streams, b.Position, b.OverSingle, want)
		}
	}
	if r.RSSPeakBytes < r.RSSBytes || r.RSSBytes <= 0 {
		t.Errorf("rss %d, peak %d", r.RSSBytes, r.RSSPeakBytes)
	}
	// Without a bandwidth probe (Options.Bandwidth 0) there is no fraction.
	if r.DecodeWeightBytesPerS <= 0 || r.ReadBandwidthBytesPerS != 0 || r.DecodeWeightReadFraction != 0 {
		t.Errorf("weight reads %g B/s, bandwidth %g, fraction %g", r.DecodeWeightBytesPerS, r.ReadBandwidthBytesPerS, r.DecodeWeightReadFraction)
	}
	if rb, err := Run(m, "tiny", "bf16", 0, Options{Prefill: -1, Positions: []int{5}, Streams: []int{}, Steps: 1, Bandwidth: 8 << 20}); err != nil ||
		rb.ReadBandwidthBytesPerS <= 0 || rb.DecodeWeightReadFraction != rb.DecodeWeightBytesPerS/rb.ReadBandwidthBytesPerS {
		t.Errorf("with the probe: %v, %+v", err, rb)
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil || !strings.Contains(b.String(), "step at position 300") ||
		!strings.Contains(b.String(), "× position 10's") || !strings.Contains(b.String(), "× one stream's tokens/s") {
		t.Errorf("table:\n%s", b.String())
	}
	if r, err := Run(m, "tiny", "bf16", 0, Options{Prefill: 24, Positions: []int{5}, Streams: []int{}, Steps: 1, NoWarmup: true}); err != nil || r.PrefillTokens != 24 || len(r.Decode) != 1 || len(r.Batched) != 0 {
		t.Errorf("without warm-up: %v, %+v", err, r)
	}
	// Batched steps with no single-token step to compare: no ratio.
	if r, err := Run(m, "tiny", "bf16", 0, Options{Prefill: -1, Positions: []int{}, Streams: []int{2}, Steps: 1}); err != nil || len(r.Batched) != 1 || r.Batched[0].OverSingle != 0 {
		t.Errorf("batched alone: %v, %+v", err, r)
	}
	if _, err := Run(m, "tiny", "bf16", 0, Options{Positions: []int{8190}, Steps: 8}); err == nil {
		t.Error("a position past max_position_embeddings was accepted")
	}
	// The narrow caches: bytes per token, what a step reads, streams per budget.
	for kv, bpt := range map[qwen3.KVType]int64{qwen3.KVBF16: 256, qwen3.KVInt8: 160} {
		mk, err := qwen3.Load(src, cfg, qwen3.Options{KVCache: kv})
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(mk, "tiny", "bf16", 0, Options{Prefill: -1, Positions: []int{50}, Streams: []int{}, Steps: 1, KVBudget: 1 << 20, KVStreamTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		if r.KVCache != kv.String() || r.KVBytesPerToken != bpt || r.Decode[0].KVReadBytes != 51*bpt || r.KVStreamsInBudget != (1<<20)/(100*bpt) {
			t.Errorf("%v: %+v", kv, r)
		}
	}
}

// TestReadBandwidthCountsTheBuffer: a measurement on a small buffer gives a
// positive, finite rate (the value itself depends on the machine).
func TestReadBandwidthCountsTheBuffer(t *testing.T) {
	bw := ReadBandwidth(8<<20, 2)
	if !(bw > 0) || math.IsInf(bw, 0) {
		t.Fatalf("ReadBandwidth = %g", bw)
	}
}

// TestReadProbeKeepsItsBestPass: a probe measured again reports the best
// pass of both measurements, so it never goes down, and a buffer too small
// to share out reports 0 instead of dividing by nothing.
func TestReadProbeKeepsItsBestPass(t *testing.T) {
	p := &readProbe{bytes: 4 << 20, threads: 2}
	first := p.measure()
	if !(first > 0) || math.IsInf(first, 0) {
		t.Fatalf("first measurement %g", first)
	}
	for range 3 {
		if again := p.measure(); again < first {
			t.Fatalf("measured again: %g, below the earlier best %g", again, first)
		}
	}
	if bw := (&readProbe{bytes: 8, threads: 4}).measure(); bw != 0 {
		t.Errorf("8-byte probe on 4 goroutines: %g, want 0", bw)
	}
}

// TestMedian: the middle step of an odd count, the mean of the two middle
// ones of an even count, whatever the order the steps come in.
func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	for _, c := range []struct {
		steps []time.Duration
		want  time.Duration
	}{
		{ms(7), 7 * time.Millisecond},
		{ms(9, 1, 5), 5 * time.Millisecond},
		{ms(8, 2, 4, 100), 6 * time.Millisecond},
		{ms(3, 3, 1, 1), 2 * time.Millisecond},
	} {
		if got := median(slices.Clone(c.steps)); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.steps, got, c.want)
		}
	}
}
