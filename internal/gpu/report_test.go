package gpu

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// TestReport measures the GPU backend for scripts/gpu-check.sh and writes
// the figures as JSON to $STREAMGUARD_GPU_REPORT: the device, copy
// bandwidth, weight upload, prefill, a single stream's step at positions
// 100 and 4,000, and batched steps of 16, 64 and 256 streams, for each
// model in $STREAMGUARD_GPU_PRESETS (default: the 0.6B shape in BF16 and
// AWQ INT4, the 8B shape in AWQ INT4, with random weights; a name ending in
// -awq is a synthetic AWQ checkpoint, any other random BF16 weights). It is a test, not a benchmark, so that one test
// binary carries every GPU check; without the variable it does nothing.
func TestReport(t *testing.T) {
	path := os.Getenv("STREAMGUARD_GPU_REPORT")
	if path == "" {
		t.Skip("STREAMGUARD_GPU_REPORT is not set: no report wanted")
	}
	ctx := openGPU(t)
	rep := map[string]any{"device": ctx.Device}
	if v, err := cuda.DriverVersion(); err == nil {
		rep["cuda_driver_version"] = v
	}
	if bw, err := copyBandwidth(ctx, 1<<30); err != nil {
		t.Errorf("copy bandwidth: %v", err)
	} else {
		rep["copy_gbps"] = bw / 1e9
	}
	presets := []string{"qwen3guard-stream-0.6b", "qwen3guard-stream-0.6b-awq", "qwen3guard-stream-8b-awq"}
	if p := os.Getenv("STREAMGUARD_GPU_PRESETS"); p != "" {
		presets = slices.Collect(func(yield func(string) bool) {
			for _, s := range splitComma(p) {
				if !yield(s) {
					return
				}
			}
		})
	}
	models := map[string]any{}
	for _, p := range presets {
		start := time.Now()
		var net *qwen3.Model
		if base, ok := strings.CutSuffix(p, "-awq"); ok {
			net = awqNetwork(t, base)
		} else {
			net = network(t, p, 0, 11)
		}
		gen := time.Since(start)
		m, err := measure(t, ctx, net)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			models[p] = map[string]any{"error": err.Error()}
			continue
		}
		m["random_weights_s"] = gen.Seconds()
		models[p] = m
		t.Logf("%s: %v", p, m)
	}
	rep["models"] = models
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func splitComma(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		if i > 0 {
			out = append(out, s[:i])
		}
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// copyBandwidth times a device-to-device copy of n bytes: bytes read plus
// written per second.
func copyBandwidth(ctx *cuda.Context, n int64) (float64, error) {
	a, err := ctx.Alloc(n)
	if err != nil {
		return 0, err
	}
	defer a.Free()
	b, err := ctx.Alloc(n)
	if err != nil {
		return 0, err
	}
	defer b.Free()
	if err := ctx.CopyDevice(b.Ptr, a.Ptr, n); err != nil { // warm up
		return 0, err
	}
	if err := ctx.Synchronize(); err != nil {
		return 0, err
	}
	start := time.Now()
	const reps = 10
	for range reps {
		if err := ctx.CopyDevice(b.Ptr, a.Ptr, n); err != nil {
			return 0, err
		}
	}
	if err := ctx.Synchronize(); err != nil {
		return 0, err
	}
	return float64(2*n*reps) / time.Since(start).Seconds(), nil
}

// measure uploads net and times its forwards (wall clock around a
// synchronous forward, which copies the logits back).
func measure(t *testing.T, ctx *cuda.Context, net *qwen3.Model) (map[string]any, error) {
	start := time.Now()
	g, err := Upload(ctx, net, Options{})
	if err != nil {
		return nil, err
	}
	defer g.Close()
	out := map[string]any{"upload_s": time.Since(start).Seconds(), "weight_bytes": g.WeightBytes(),
		"kv_bytes_per_token": g.BytesPerPosition()}
	free, total, bs := g.CacheBlocks()
	out["kv_cache_positions"] = total * bs
	_ = free
	r := rand.New(rand.NewPCG(7, 8))
	vocab := net.VocabSize()
	timeIt := func(f func() error, reps int) (float64, error) {
		var ds []float64
		for range reps {
			s := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(s).Seconds()*1e3)
		}
		slices.Sort(ds)
		return ds[len(ds)/2], nil
	}
	// Prefill of 512 tokens on a fresh stream.
	pp, err := timeIt(func() error {
		c := g.NewCache()
		defer c.Release()
		_, err := g.Forward([]Sequence{{Cache: c, IDs: randomIDs(r, 512, vocab)}})
		return err
	}, 5)
	if err != nil {
		return nil, err
	}
	out["prefill512_ms"] = pp
	// One stream's step at positions 100 and 4,000.
	steps := map[string]float64{}
	for _, p := range []int{100, 4000} {
		c := g.NewCache()
		for c.Len() < p {
			n := min(512, p-c.Len())
			if _, err := g.Forward([]Sequence{{Cache: c, IDs: randomIDs(r, n, vocab)}}); err != nil {
				return nil, err
			}
		}
		ms, err := timeIt(func() error {
			_, err := g.Forward([]Sequence{{Cache: c, IDs: randomIDs(r, 1, vocab)}})
			return err
		}, 30)
		c.Release()
		if err != nil {
			return nil, err
		}
		steps[itoa(p)] = ms
	}
	out["step_ms_at_position"] = steps
	// Batched steps: N streams at position ~100, one token each.
	batched := map[string]any{}
	for _, n := range []int{16, 64, 256} {
		cs := make([]*Cache, n)
		seqs := make([]Sequence, n)
		for i := range cs {
			cs[i] = g.NewCache()
			if _, err := g.Forward([]Sequence{{Cache: cs[i], IDs: randomIDs(r, 100, vocab)}}); err != nil {
				return nil, err
			}
		}
		ms, err := timeIt(func() error {
			for i := range seqs {
				seqs[i] = Sequence{Cache: cs[i], IDs: randomIDs(r, 1, vocab)}
			}
			_, err := g.Forward(seqs)
			return err
		}, 15)
		for _, c := range cs {
			c.Release()
		}
		if err != nil {
			return nil, err
		}
		batched[itoa(n)] = map[string]float64{"step_ms": ms, "tokens_per_s": float64(n) / ms * 1e3}
	}
	out["batched"] = batched
	return out, nil
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
