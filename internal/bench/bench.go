// Package bench measures the engine: prefill throughput, the latency of one
// streamed token at given cache lengths, throughput of batched steps over
// many streams, load time and resident memory, and the KV-cache memory per
// token and per stream of the model's cache type.
package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// Options choose what to measure. Zero values take the defaults noted.
type Options struct {
	Prefill   int   // prompt length for the prefill measurement (512); <0 skips it
	Positions []int // cache lengths at which one token's step is timed (100, 4000)
	Streams   []int // stream counts for batched steps (4, 16, 64)
	Steps     int   // timed steps per measurement (8)
	Seed      uint64
	// Bandwidth, when positive, is the buffer size of a read-bandwidth
	// measurement taken in the same run (ReadBandwidth), so the decode
	// step's weight traffic can be compared with what the machine reads.
	Bandwidth int64
	// NoWarmup skips the untimed prefill of the same length that
	// precedes the timed one (llama-bench's --no-warmup): the timed run
	// then also pays for sizing the pooled workspaces and first touching
	// the KV cache's pages.
	NoWarmup bool
	// Progress, when not nil, is told each measurement as it starts: a
	// name ("prefill 512 tokens"), its number i from 1 and the count n.
	Progress func(name string, i, n int)
	// KVBudget (bytes, 4 GiB) and KVStreamTokens (4000) size the report's
	// KVStreamsInBudget: how many streams of that many tokens the budget
	// holds in the model's cache type. Nothing is allocated for it.
	KVBudget       int64
	KVStreamTokens int
}

func (o *Options) defaults() {
	if o.Prefill == 0 {
		o.Prefill = 512
	}
	if o.Positions == nil {
		o.Positions = []int{100, 4000}
	}
	if o.Streams == nil {
		o.Streams = []int{4, 16, 64}
	}
	if o.Steps <= 0 {
		o.Steps = 8
	}
	if o.KVBudget <= 0 {
		o.KVBudget = 4 << 30
	}
	if o.KVStreamTokens <= 0 {
		o.KVStreamTokens = 4000
	}
}

// median is the middle of steps (the mean of the two middle ones for an
// even count; sorts steps). len(steps) > 0.
func median(steps []time.Duration) time.Duration {
	slices.Sort(steps)
	n := len(steps)
	return (steps[(n-1)/2] + steps[n/2]) / 2
}

// Step is the timing of single-token steps at one cache length.
type Step struct {
	Position   int     `json:"position"`
	MsPerToken float64 `json:"ms_per_token"` // mean
	MinMs      float64 `json:"min_ms"`
	// MedianMs is the middle step (the mean of the two middle ones for an
	// even count): on a machine whose speed drifts within a run, the figure
	// a few slow spells move least.
	MedianMs   float64 `json:"median_ms"`
	TokensPerS float64 `json:"tokens_per_s"`
	KVBytes    int64   `json:"kv_bytes"`
	// KVReadBytes is what the step's attention reads of the cache: every
	// layer's keys and values at Position+1 positions.
	KVReadBytes int64 `json:"kv_read_bytes"`
	StepsTimed  int   `json:"steps"`
	// MedianOverFirst is MedianMs over the median step at the first
	// position timed (1 there): how a step's cost grows with the cache.
	MedianOverFirst float64 `json:"median_over_first"`
}

// Batched is the timing of steps that feed one token to each of N streams.
type Batched struct {
	Streams         int     `json:"streams"`
	Position        int     `json:"position"`
	MsPerStep       float64 `json:"ms_per_step"` // mean
	MedianMsPerStep float64 `json:"median_ms_per_step"`
	TokensPerS      float64 `json:"tokens_per_s"` // from the mean
	// OverSingle is the tokens/s of the median batched step over those of
	// the median single-token step at the same position (absent when no
	// single-token step was timed there): what batching gains.
	OverSingle float64 `json:"over_single,omitempty"`
}

// Report is the result; the JSON keys are the ones the project's scripts
// read.
type Report struct {
	Model       string  `json:"model"`
	DType       string  `json:"dtype"`
	Threads     int     `json:"threads"`
	LoadSeconds float64 `json:"load_seconds"`
	// RepackCache is how the load used the repacked-weights file of an
	// AWQ model (guard.Info.RepackCache).
	RepackCache string `json:"repack_cache,omitempty"`
	// RepackCacheBytes is the size of the repacked-weights file the model
	// maps, and RepackCacheHugeMappedBytes how much of it is mapped 2 MiB
	// at a time (the page cache holding it in 2 MiB folios; absent where
	// the system does not say).
	RepackCacheBytes           int64  `json:"repack_cache_bytes,omitempty"`
	RepackCacheHugeMappedBytes *int64 `json:"repack_cache_huge_mapped_bytes,omitempty"`
	// Device is where the figures were measured: "cpu" (a GPU's report
	// comes from the GPU backend instead); DeviceNote, with --device auto,
	// why no GPU was used.
	Device            string             `json:"device"`
	DeviceNote        string             `json:"device_note,omitempty"`
	PrefillTokens     int                `json:"prefill_tokens"`
	PrefillSeconds    float64            `json:"prefill_seconds"`
	PrefillTokensPerS float64            `json:"prefill_tokens_per_s"`
	Decode            []Step             `json:"decode"`
	DecodeTokensPerS  float64            `json:"decode_tokens_per_s"`
	Batched           []Batched          `json:"batched"`
	BatchedTokensPerS map[string]float64 `json:"batched_tokens_per_s"`
	KVBytesPerToken   int64              `json:"kv_bytes_per_token"`
	// KVCache is the cache type (f32, bf16, int8). KVStreamsInBudget is how
	// many streams of KVStreamTokens tokens hold their keys and values in
	// KVBudgetBytes (the data: a cache's capacity rounds up by at most a
	// quarter, and the server charges that bound).
	KVCache           string `json:"kv_cache"`
	KVBudgetBytes     int64  `json:"kv_budget_bytes"`
	KVStreamTokens    int    `json:"kv_stream_tokens"`
	KVStreamsInBudget int64  `json:"kv_streams_in_budget"`
	RSSBytes          int64  `json:"rss_bytes"`
	RSSPeakBytes      int64  `json:"rss_peak_bytes"`
	// DecodeWeightBytes is what one single-token step reads of weights;
	// DecodeWeightBytesPerS divides it by the fastest step at the first
	// position, and ReadBandwidthBytesPerS is the machine's read bandwidth
	// measured in the same run, the best pass of probes just before and
	// just after the timed single-token steps (0 when not measured).
	// DecodeWeightReadFraction is the one over the other (0 without a
	// bandwidth): how close a single-stream step comes to reading its
	// weights at the machine's bandwidth.
	DecodeWeightBytes        int64   `json:"decode_weight_bytes"`
	DecodeWeightBytesPerS    float64 `json:"decode_weight_bytes_per_s"`
	ReadBandwidthBytesPerS   float64 `json:"read_bandwidth_bytes_per_s"`
	DecodeWeightReadFraction float64 `json:"decode_weight_read_fraction"`
	// LoadAverage is the 1-minute load average before and after the run
	// (Linux): a value above the core count means other work shared the
	// cores and the timings are pessimistic.
	LoadAverage [2]float64 `json:"load_average"`
	// RSSAfterLoadBytes is the resident memory when measuring began: the
	// weights (mapped pages count once touched) and the runtime.
	RSSAfterLoadBytes int64 `json:"rss_after_load_bytes"`
	CPUs              int   `json:"cpus"`
}

// Run measures m. model and dtype only label the report.
func Run(m *qwen3.Model, model, dtype string, load time.Duration, o Options) (*Report, error) {
	o.defaults()
	load1 := loadAverage()
	rssLoad, _ := rss()
	r := &Report{CPUs: runtime.NumCPU(), Device: "cpu", Model: model, DType: dtype, Threads: kernels.Threads(), LoadSeconds: load.Seconds(),
		KVBytesPerToken: m.BytesPerPosition(), BatchedTokensPerS: map[string]float64{},
		KVCache: m.KVCache().String(), KVBudgetBytes: o.KVBudget, KVStreamTokens: o.KVStreamTokens}
	r.KVStreamsInBudget = o.KVBudget / (int64(o.KVStreamTokens) * r.KVBytesPerToken)
	vocab := m.VocabSize()
	ids := func(n int, salt uint64) []int {
		out := make([]int, n)
		x := salt*0x9e3779b97f4a7c15 | 1
		for i := range out {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			out[i] = int(x % uint64(min(vocab, 151643))) // ordinary tokens
		}
		return out
	}
	for _, p := range append(slices.Clone(o.Positions), o.Prefill) {
		if p+o.Steps+1 > m.MaxPositions {
			return nil, fmt.Errorf("position %d plus %d steps exceeds the model's %d positions", p, o.Steps, m.MaxPositions)
		}
	}

	stages := len(o.Positions) + len(o.Streams)
	if o.Prefill > 0 {
		stages += 2
	}
	if o.Bandwidth > 0 {
		stages += 2 // probes before and after the steps
	}
	done := 0
	stage := func(format string, a ...any) {
		done++
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(format, a...), done, stages)
		}
	}

	if o.Prefill > 0 {
		stage("warm-up prefill of %d tokens", o.Prefill)
		c := m.NewCache()
		if err := c.Reserve(o.Prefill); err != nil {
			return nil, err
		}
		// An untimed prefill of the same length (as llama-bench runs one
		// before timing) sizes the pooled workspaces and kernel scratch and
		// touches the cache's pages, so the timed run measures the forward
		// itself; without it, one untimed token still warms the page cache.
		warm := ids(o.Prefill, o.Seed+2)
		if o.NoWarmup {
			warm = ids(1, 99)
		}
		if _, err := m.Forward([]qwen3.Sequence{{Cache: c, IDs: warm}}, qwen3.ForwardOptions{}); err != nil {
			return nil, err
		}
		c.Truncate(0)
		stage("prefill of %d tokens", o.Prefill)
		start := time.Now()
		if _, err := m.Forward([]qwen3.Sequence{{Cache: c, IDs: ids(o.Prefill, o.Seed+1)}}, qwen3.ForwardOptions{}); err != nil {
			return nil, err
		}
		el := time.Since(start)
		r.PrefillTokens, r.PrefillSeconds = o.Prefill, el.Seconds()
		r.PrefillTokensPerS = float64(o.Prefill) / el.Seconds()
		c.Release()
	}

	// The read probe runs just before and just after the timed steps, and
	// its best pass counts: a VM's bandwidth drifts within seconds, and a
	// probe on one side only can catch a slow spell the steps missed.
	var probe *readProbe
	if o.Bandwidth > 0 {
		stage("read bandwidth")
		probe = &readProbe{bytes: o.Bandwidth, threads: kernels.Threads()}
		probe.measure()
	}
	for _, p := range o.Positions {
		stage("decode at position %d", p)
		c := m.NewCache()
		if err := c.FillRandom(p, o.Seed+uint64(p)); err != nil {
			return nil, err
		}
		// Room for every step up front: a growing cache copies itself
		// each time it grows by a quarter, which a live stream spreads over
		// that many tokens but a run of a few steps would count whole. The
		// room is touched before timing too (Prefault): a fresh process's
		// new memory faults as steps fill it, a server's reused memory not.
		if err := c.Reserve(p + o.Steps + 1); err != nil {
			return nil, err
		}
		c.Prefault()
		toks := ids(o.Steps+1, o.Seed+2)
		readRows(m, toks)
		// The first step is untimed.
		if _, err := m.Forward([]qwen3.Sequence{{Cache: c, IDs: toks[:1]}}, qwen3.ForwardOptions{}); err != nil {
			return nil, err
		}
		var total time.Duration
		steps := make([]time.Duration, o.Steps)
		for i := range o.Steps {
			start := time.Now()
			if _, err := m.Forward([]qwen3.Sequence{{Cache: c, IDs: toks[i+1 : i+2]}}, qwen3.ForwardOptions{}); err != nil {
				return nil, err
			}
			steps[i] = time.Since(start)
			total += steps[i]
		}
		mean := total.Seconds() / float64(o.Steps)
		r.Decode = append(r.Decode, Step{Position: p, MsPerToken: mean * 1e3, MinMs: slices.Min(steps).Seconds() * 1e3, MedianMs: median(steps).Seconds() * 1e3,
			TokensPerS: 1 / mean, KVBytes: c.Bytes(), KVReadBytes: int64(p+1) * c.BytesPerPosition(), StepsTimed: o.Steps})
		c.Release()
	}
	r.DecodeWeightBytes = m.DecodeWeightBytes()
	if len(r.Decode) > 0 && r.Decode[0].MedianMs > 0 {
		first := r.Decode[0].MedianMs
		for i := range r.Decode {
			r.Decode[i].MedianOverFirst = r.Decode[i].MedianMs / first
		}
	}
	if len(r.Decode) > 0 {
		r.DecodeTokensPerS = r.Decode[0].TokensPerS
		r.DecodeWeightBytesPerS = float64(r.DecodeWeightBytes) / (r.Decode[0].MinMs / 1e3)
	}
	if probe != nil {
		stage("read bandwidth again")
		r.ReadBandwidthBytesPerS = probe.measure()
		if r.ReadBandwidthBytesPerS > 0 {
			r.DecodeWeightReadFraction = r.DecodeWeightBytesPerS / r.ReadBandwidthBytesPerS
		}
	}

	for _, n := range o.Streams {
		stage("%d streams batched", n)
		pos := 100
		if len(o.Positions) > 0 {
			pos = o.Positions[0]
		}
		seqs := make([]qwen3.Sequence, n)
		for i := range seqs {
			seqs[i].Cache = m.NewCache()
			// Stagger the lengths as live streams would be.
			if err := seqs[i].Cache.FillRandom(pos+i%8, o.Seed+uint64(i)); err != nil {
				return nil, err
			}
			if err := seqs[i].Cache.Reserve(pos + i%8 + o.Steps + 1); err != nil {
				return nil, err
			}
			seqs[i].Cache.Prefault()
		}
		toks := ids(n*(o.Steps+1), o.Seed+3)
		readRows(m, toks)
		step := func(k int) error {
			for i := range seqs {
				seqs[i].IDs = toks[k*n+i : k*n+i+1]
			}
			_, err := m.Forward(seqs, qwen3.ForwardOptions{})
			return err
		}
		if err := step(0); err != nil {
			return nil, err
		}
		steps := make([]time.Duration, o.Steps)
		start := time.Now()
		for k := 1; k <= o.Steps; k++ {
			t0 := time.Now()
			if err := step(k); err != nil {
				return nil, err
			}
			steps[k-1] = time.Since(t0)
		}
		per := time.Since(start).Seconds() / float64(o.Steps)
		b := Batched{Streams: n, Position: pos, MsPerStep: per * 1e3, MedianMsPerStep: median(steps).Seconds() * 1e3, TokensPerS: float64(n) / per}
		if len(r.Decode) > 0 && r.Decode[0].Position == pos && b.MedianMsPerStep > 0 {
			b.OverSingle = float64(n) * r.Decode[0].MedianMs / b.MedianMsPerStep
		}
		r.Batched = append(r.Batched, b)
		r.BatchedTokensPerS[strconv.Itoa(n)] = b.TokensPerS
		for i := range seqs {
			seqs[i].Cache.Release()
		}
	}
	r.RSSBytes, r.RSSPeakBytes = rss()
	r.LoadAverage = [2]float64{load1, loadAverage()}
	r.RSSAfterLoadBytes = rssLoad
	return r, nil
}

// rss reads the resident set size and its peak (VmRSS, VmHWM) from
// /proc/self/status; zeros where that file does not exist.
func rss() (cur, peak int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

// loadAverage reads the 1-minute load average (0 where unavailable).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s (%s), %d threads\n", r.Model, r.DType, r.Threads)
	fmt.Fprintf(tw, "load\t%.2f s\n", r.LoadSeconds)
	if r.RepackCache != "" {
		fmt.Fprintf(tw, "repack cache\t%s\n", r.RepackCache)
	}
	if r.RepackCacheBytes > 0 && r.RepackCacheHugeMappedBytes != nil {
		fmt.Fprintf(tw, "\t%s of %s mapped 2 MiB at a time\n", bytesString(*r.RepackCacheHugeMappedBytes), bytesString(r.RepackCacheBytes))
	}
	if r.PrefillTokens > 0 {
		fmt.Fprintf(tw, "prefill pp%d\t%.1f tokens/s\t(%.2f s)\n", r.PrefillTokens, r.PrefillTokensPerS, r.PrefillSeconds)
	}
	for i, d := range r.Decode {
		growth := ""
		if i > 0 && d.MedianOverFirst > 0 {
			growth = fmt.Sprintf(", median %.2f× position %d's", d.MedianOverFirst, r.Decode[0].Position)
		}
		fmt.Fprintf(tw, "step at position %d\t%.2f ms/token\t(median %.2f ms, min %.2f ms, %.1f tokens/s, reads %s of KV, holds %s%s)\n",
			d.Position, d.MsPerToken, d.MedianMs, d.MinMs, d.TokensPerS, bytesString(d.KVReadBytes), bytesString(d.KVBytes), growth)
	}
	for _, b := range r.Batched {
		gain := ""
		if b.OverSingle > 0 {
			gain = fmt.Sprintf(", %.2f× one stream's tokens/s", b.OverSingle)
		}
		fmt.Fprintf(tw, "batched %d streams\t%.1f tokens/s\t(%.2f ms per step, median %.2f ms, position ~%d%s)\n", b.Streams, b.TokensPerS, b.MsPerStep, b.MedianMsPerStep, b.Position, gain)
	}
	if r.DecodeWeightBytesPerS > 0 {
		fmt.Fprintf(tw, "decode weight reads\t%s per token, %.2f GB/s at the fastest step", bytesString(r.DecodeWeightBytes), r.DecodeWeightBytesPerS/1e9)
		if r.ReadBandwidthBytesPerS > 0 {
			fmt.Fprintf(tw, " = %.0f%% of the %.2f GB/s read bandwidth measured now", 100*r.DecodeWeightReadFraction, r.ReadBandwidthBytesPerS/1e9)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "KV cache\t%s, %s per token; %d streams of %d tokens in %s\n", r.KVCache, bytesString(r.KVBytesPerToken),
		r.KVStreamsInBudget, r.KVStreamTokens, bytesString(r.KVBudgetBytes))
	fmt.Fprintf(tw, "memory\t%s resident after load, %s at the end, %s peak\n",
		bytesString(r.RSSAfterLoadBytes), bytesString(r.RSSBytes), bytesString(r.RSSPeakBytes))
	if r.LoadAverage[0] > float64(r.CPUs) || r.LoadAverage[1] > float64(r.CPUs) {
		fmt.Fprintf(tw, "warning\tload average %.1f/%.1f on %d CPUs: other work shared the cores\n", r.LoadAverage[0], r.LoadAverage[1], r.CPUs)
	}
	return tw.Flush()
}

func bytesString(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// readRows reads the embedding rows of the tokens a measurement will feed,
// before it is timed. A row's first read brings its page into the page
// cache (and, read through the mapping, faults it in), tens of
// microseconds on a virtual machine; a server pays that once for the
// tokens it sees again and again, while the benchmark's random tokens
// would pay it at nearly every step.
func readRows(m *qwen3.Model, ids []int) {
	row := make([]float32, m.Hidden())
	for _, id := range ids {
		m.Embed.Lookup(row, id)
	}
}
