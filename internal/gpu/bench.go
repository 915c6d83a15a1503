package gpu

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// BenchOptions says what Bench measures.
type BenchOptions struct {
	Prefill   int   // prompt length of the prefill measurement (0 skips it)
	Positions []int // cache lengths at which a single-token step is timed
	Streams   []int // stream counts of the batched steps (at position ~100)
	Steps     int   // timed repetitions per measurement; the median is reported
	Seed      uint64
	// Recompute is the prefix of the recompute-per-token comparison: each
	// new token judged by running the whole conversation again (prefix + 1
	// tokens from an empty cache), as the upstream code does, against one
	// cached step at that position (0 skips it).
	Recompute int
	Model     Options // the upload's options (the KV cache's size is Bench's own)
	CopyBytes int64   // size of the copy-bandwidth measurement (0: 1 GiB)
}

// BenchStep is one single-stream step measurement.
type BenchStep struct {
	Position   int     `json:"position"`
	MsPerToken float64 `json:"ms_per_token"`
	TokensPerS float64 `json:"tokens_per_s"`
	// MsPerTokenDirect is the same step with every kernel launched on its
	// own instead of replaying a graph, timed alternately with it.
	MsPerTokenDirect float64 `json:"ms_per_token_direct,omitempty"`
}

// BenchBatched is one batched-step measurement.
type BenchBatched struct {
	Streams         int     `json:"streams"`
	MsPerStep       float64 `json:"ms_per_step"`
	TokensPerS      float64 `json:"tokens_per_s"`
	MsPerStepDirect float64 `json:"ms_per_step_direct,omitempty"` // launched kernel by kernel, as BenchStep's
}

// BenchReport is what Bench measured. Times are medians of synchronous
// forwards timed on the host (each copies its logits back).
type BenchReport struct {
	Device            string          `json:"device"`
	CUDADriverVersion int             `json:"cuda_driver_version,omitempty"`
	CopyGBps          float64         `json:"copy_gbps"` // device-to-device, bytes read plus written
	UploadSeconds     float64         `json:"upload_seconds"`
	WeightBytes       int64           `json:"weight_bytes"`
	KVBytesPerToken   int64           `json:"kv_bytes_per_token"`
	KVCachePositions  int             `json:"kv_cache_positions"`
	PrefillTokens     int             `json:"prefill_tokens"`
	PrefillMs         float64         `json:"prefill_ms"`
	PrefillTokensPerS float64         `json:"prefill_tokens_per_s"`
	Decode            []BenchStep     `json:"decode"`
	Batched           []BenchBatched  `json:"batched"`
	Graphs            GraphStats      `json:"graphs"`
	Products          Projections     `json:"products"`
	Recompute         *BenchRecompute `json:"recompute,omitempty"`
}

// BenchRecompute compares judging a token by recomputing its whole prefix
// with one cached step at the same position, timed alternately.
type BenchRecompute struct {
	Prefix      int     `json:"prefix"`
	RecomputeMs float64 `json:"recompute_ms"` // prefix + 1 tokens from an empty cache
	StepMs      float64 `json:"step_ms"`      // the one new token on a cache of prefix positions
	Speedup     float64 `json:"speedup"`      // RecomputeMs / StepMs
}

// Bench uploads net to the GPU of ctx and measures it: copy bandwidth,
// upload time, GPU memory, a prefill, single-stream steps and batched
// steps. The model is released before it returns.
func Bench(ctx *cuda.Context, net *qwen3.Model, o BenchOptions) (*BenchReport, error) {
	if o.Steps < 1 {
		o.Steps = 1
	}
	rep := &BenchReport{Device: fmt.Sprintf("cuda:%d (%s)", ctx.Device.Ordinal, ctx.Device)}
	if v, err := cuda.DriverVersion(); err == nil {
		rep.CUDADriverVersion = v
	}
	if o.CopyBytes <= 0 {
		o.CopyBytes = 1 << 30
	}
	bw, err := copyBandwidth(ctx, o.CopyBytes)
	if err != nil {
		return nil, fmt.Errorf("copy bandwidth: %w", err)
	}
	rep.CopyGBps = bw / 1e9
	start := time.Now()
	g, err := Upload(ctx, net, Options{NoGraphs: o.Model.NoGraphs, NoTensorCores: o.Model.NoTensorCores})
	if err != nil {
		return nil, err
	}
	defer g.Close()
	rep.UploadSeconds = time.Since(start).Seconds()
	rep.WeightBytes, rep.KVBytesPerToken = g.WeightBytes(), g.BytesPerPosition()
	_, total, bs := g.CacheBlocks()
	rep.KVCachePositions = total * bs

	r := rand.New(rand.NewPCG(o.Seed, 8))
	vocab := net.VocabSize()
	// alternated runs each of fs in turn, reps rounds, and returns the
	// median milliseconds of each: what is compared is timed side by side.
	alternated := func(reps int, fs ...func() error) ([]float64, error) {
		ds := make([][]float64, len(fs))
		for range reps {
			for i, f := range fs {
				s := time.Now()
				if err := f(); err != nil {
					return nil, err
				}
				ds[i] = append(ds[i], time.Since(s).Seconds()*1e3)
			}
		}
		ms := make([]float64, len(fs))
		for i, d := range ds {
			slices.Sort(d)
			ms[i] = d[len(d)/2]
		}
		return ms, nil
	}
	median := func(f func() error, reps int) (float64, error) {
		ms, err := alternated(reps, f)
		if err != nil {
			return 0, err
		}
		return ms[0], nil
	}
	// pair times f alternately replaying graphs and launching directly
	// (after two steps that record the graph), where graphs are on.
	pair := func(f func() error) (graphs, direct float64, err error) {
		if g.graphs == nil {
			graphs, err = median(f, o.Steps)
			return graphs, 0, err
		}
		for range 2 {
			if err := f(); err != nil {
				return 0, 0, err
			}
		}
		launched := func() error {
			g.direct = true
			defer func() { g.direct = false }()
			return f()
		}
		ms, err := alternated(o.Steps, f, launched)
		if err != nil {
			return 0, 0, err
		}
		return ms[0], ms[1], nil
	}
	forward := func(c *Cache, n int) error {
		_, err := g.Forward([]Sequence{{Cache: c, IDs: randomIDs(r, n, vocab)}})
		return err
	}
	if o.Prefill > 0 {
		ms, err := median(func() error {
			c := g.NewCache()
			defer c.Release()
			return forward(c, o.Prefill)
		}, o.Steps)
		if err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
		rep.PrefillTokens, rep.PrefillMs, rep.PrefillTokensPerS = o.Prefill, ms, float64(o.Prefill)/ms*1e3
	}
	if o.Recompute > 0 {
		// The cached stream is cut back to the prefix after each step, so
		// that every step is at the same position.
		c := g.NewCache()
		err := fill(c, o.Recompute, forward)
		var ms []float64
		if err == nil {
			ms, err = alternated(o.Steps, func() error {
				f := g.NewCache()
				defer f.Release()
				return forward(f, o.Recompute+1)
			}, func() error {
				defer c.table.Truncate(o.Recompute) // back to the prefix: a table edit, no GPU work
				return forward(c, 1)
			})
		}
		c.Release()
		if err != nil {
			return nil, fmt.Errorf("recompute at %d: %w", o.Recompute, err)
		}
		r := &BenchRecompute{Prefix: o.Recompute, RecomputeMs: ms[0], StepMs: ms[1]}
		r.Speedup = r.RecomputeMs / r.StepMs
		rep.Recompute = r
	}
	for _, p := range o.Positions {
		c := g.NewCache()
		err := fill(c, p, forward)
		var ms, direct float64
		if err == nil {
			ms, direct, err = pair(func() error { return forward(c, 1) })
		}
		c.Release()
		if err != nil {
			return nil, fmt.Errorf("step at position %d: %w", p, err)
		}
		rep.Decode = append(rep.Decode, BenchStep{Position: p, MsPerToken: ms, TokensPerS: 1e3 / ms, MsPerTokenDirect: direct})
	}
	for _, n := range o.Streams {
		cs := make([]*Cache, n)
		seqs := make([]Sequence, n)
		var err error
		for i := range cs {
			cs[i] = g.NewCache()
			if err == nil {
				err = fill(cs[i], 100, forward)
			}
		}
		var ms, direct float64
		if err == nil {
			ms, direct, err = pair(func() error {
				for i := range seqs {
					seqs[i] = Sequence{Cache: cs[i], IDs: randomIDs(r, 1, vocab)}
				}
				_, err := g.Forward(seqs)
				return err
			})
		}
		for _, c := range cs {
			c.Release()
		}
		if err != nil {
			return nil, fmt.Errorf("%d streams: %w", n, err)
		}
		rep.Batched = append(rep.Batched, BenchBatched{Streams: n, MsPerStep: ms, TokensPerS: float64(n) / ms * 1e3, MsPerStepDirect: direct})
	}
	rep.Graphs, rep.Products = g.Graphs(), g.Products()
	return rep, nil
}

// fill feeds c random tokens up to position p, 512 at a time.
func fill(c *Cache, p int, forward func(*Cache, int) error) error {
	for c.Len() < p {
		if err := forward(c, min(512, p-c.Len())); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable prints the report for a terminal.
func (r *BenchReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "device\t%s\n", r.Device)
	fmt.Fprintf(tw, "copy bandwidth\t%.0f GB/s (device to device, read + write)\n", r.CopyGBps)
	fmt.Fprintf(tw, "upload\t%.2f s, weights %.2f GB, KV %d bytes per token, %d positions of cache\n",
		r.UploadSeconds, float64(r.WeightBytes)/1e9, r.KVBytesPerToken, r.KVCachePositions)
	fmt.Fprintf(tw, "projections\t%d on tensor cores, %d one warp per row; attention on tensor cores: %v\n",
		r.Products.TensorCores, r.Products.Warps, r.Products.AttentionTensorCores)
	if r.PrefillTokens > 0 {
		fmt.Fprintf(tw, "prefill %d tokens\t%.0f tokens/s\t(%.2f ms)\n", r.PrefillTokens, r.PrefillTokensPerS, r.PrefillMs)
	}
	direct := func(ms float64) string {
		if ms == 0 {
			return ""
		}
		return fmt.Sprintf("; %.3f ms launching each kernel", ms)
	}
	for _, s := range r.Decode {
		fmt.Fprintf(tw, "step at position %d\t%.3f ms\t(%.0f tokens/s%s)\n", s.Position, s.MsPerToken, s.TokensPerS, direct(s.MsPerTokenDirect))
	}
	for _, b := range r.Batched {
		fmt.Fprintf(tw, "batched %s streams\t%.0f tokens/s\t(%.3f ms per step, position ~100%s)\n", strconv.Itoa(b.Streams), b.TokensPerS, b.MsPerStep, direct(b.MsPerStepDirect))
	}
	if rc := r.Recompute; rc != nil {
		fmt.Fprintf(tw, "recompute at %d\t%.3f ms a token, against %.3f ms cached\t(%.0f×)\n", rc.Prefix, rc.RecomputeMs, rc.StepMs, rc.Speedup)
	}
	switch g := r.Graphs; {
	case g.On:
		fmt.Fprintf(tw, "graphs\t%d recorded, %d replayed, %d kernels in the latest\n", g.Recorded, g.Replayed, g.Nodes)
	case g.Err != "":
		fmt.Fprintf(tw, "graphs\toff: %s\n", g.Err)
	default:
		fmt.Fprintf(tw, "graphs\toff\n")
	}
	return tw.Flush()
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

// randomIDs draws n token ids below vocab (and below the tokenizer's
// regular range, 150,000).
func randomIDs(r *rand.Rand, n, vocab int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = r.IntN(min(vocab, 150000))
	}
	return ids
}
