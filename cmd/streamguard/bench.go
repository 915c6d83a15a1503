package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/bench"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "measure prefill, per-token stream steps, batched streams, load time and memory",
		run:     runBench,
	})
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "(--model DIR|ORG/NAME[@REV] | --preset NAME [--dtype bf16|f16|f32] [--seed N]) [flags]", stderr)
	model := fs.String("model", "", modelFlagHelp)
	preset := fs.String("preset", "", "build random weights in memory at this preset's shapes instead: "+strings.Join(config.PresetNames(), ", "))
	dtype := fs.String("dtype", "bf16", "weight dtype for --preset: bf16, f16 or f32")
	seed := fs.Uint64("seed", 1, "random seed for --preset weights and the token ids")
	pp := fs.Int("pp", 512, "prompt length for the prefill measurement (0 skips it)")
	positions := fs.String("positions", "100,4000", "cache lengths at which a single-token step is timed")
	streams := fs.String("streams", "4,16,64", "stream counts for batched steps (empty skips them)")
	steps := fs.Int("steps", 8, "timed steps per measurement")
	noWarmup := fs.Bool("no-warmup", false, "skip the untimed prefill of the same length before the timed one")
	threads := threadsFlag(fs, "kernel goroutines, `n` up to 1024 (0: GOMAXPROCS)")
	jsonOut := fs.Bool("json", false, "print one JSON object")
	coarse := fs.Bool("int4-coarse", false, "INT4 models: one int8 activation row per token instead of a row plus its residual (faster, less exact)")
	bandwidth := fs.Int64("bandwidth-mib", 512, "also measure the machine's read bandwidth with a buffer of this many MiB, to compare with decode's weight reads (0 skips it)")
	kvCache := kvCacheFlag(fs, "bf16")
	repackCache := repackCacheFlag(fs)
	kvBudget := fs.Int64("kv-budget-mib", 4096, "report how many resident streams of --kv-stream-tokens tokens fit in a KV-cache budget of this many MiB")
	kvStream := fs.Int("kv-stream-tokens", 4000, "stream length for the --kv-budget-mib figure")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof reads it)")
	device := deviceFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if (*model == "") == (*preset == "") {
		return usageErrorf("give exactly one of --model and --preset")
	}
	pos, err := parseInts("positions", *positions)
	if err != nil {
		return err
	}
	str, err := parseInts("streams", *streams)
	if err != nil {
		return err
	}
	if *pp < 0 || *steps < 1 || *threads < 0 || *kvBudget < 0 || *kvStream < 1 {
		return usageErrorf("--pp, --steps, --threads and --kv-budget-mib must not be negative (and --steps and --kv-stream-tokens at least 1)")
	}
	kv, err := qwen3.ParseKVType(*kvCache)
	if err != nil {
		return usageErrorf("--kv-cache: %v", err)
	}
	devKind, ordinal, err := guardhook.ParseDevice(*device)
	if err != nil {
		return usageErrorf("--device: %v", err)
	}
	if *threads > 0 {
		kernels.SetThreads(*threads)
	}
	opts := bench.Options{Prefill: *pp, Positions: pos, Streams: str, Steps: *steps, Seed: *seed, Bandwidth: *bandwidth << 20, NoWarmup: *noWarmup,
		KVBudget: *kvBudget << 20, KVStreamTokens: *kvStream}
	if *pp == 0 {
		opts.Prefill = -1
	}

	// On a terminal (and without --json), the stage running now.
	line := newStageLine(progressTo(stderr, *jsonOut), "bench")
	defer line.finish()
	if line != nil {
		opts.Progress = func(name string, i, n int) { line.stage(fmt.Sprintf("%s (%d/%d)", name, i, n)) }
	}
	var net *qwen3.Model
	var label, dt, repackUse string
	var repackBytes int64
	var repackHuge *int64
	start := time.Now()
	line.stage("loading the model")
	if *model != "" {
		dir, err := resolveModel(*model, stderr)
		if err != nil {
			return err
		}
		gopts := guard.Options{Int4Coarse: *coarse, KVCache: kv.String(), RepackCache: *repackCache}
		var m *guard.Model
		if devKind == "cuda" {
			// Loaded as a GPU deployment loads it: no CPU copy of AWQ
			// weights (auto keeps one, for its fallback to the CPU).
			m, err = guardhook.LoadForUpload[*guard.Model](context.Background(), dir, gopts)
		} else {
			m, err = guard.Load(context.Background(), dir, gopts)
		}
		if err != nil {
			return err
		}
		defer m.Close()
		reportRepack(stderr, m)
		repackUse = m.Info().RepackCache.String()
		if size, huge, ok := guardhook.Weights(m).PackMapping(); ok {
			repackBytes = size
			if huge >= 0 {
				repackHuge = &huge
			}
		}
		net, label = guardhook.Network(m), *model
		dt = net.Config.TorchDtype
		if net.Config.IsAWQ() {
			dt = "awq"
		}
	} else {
		cfg, err := config.Preset(*preset)
		if err != nil {
			return usageErrorf("%v", err)
		}
		d, ok := map[string]safetensors.DType{"bf16": safetensors.BF16, "f16": safetensors.F16, "f32": safetensors.F32}[*dtype]
		if !ok {
			return usageErrorf("--dtype %q: want bf16, f16 or f32", *dtype)
		}
		src, err := qwen3.RandomSource(cfg, d, *seed)
		if err != nil {
			return err
		}
		if net, err = qwen3.Load(src, cfg, qwen3.Options{KVCache: kv}); err != nil {
			return err
		}
		label, dt = "preset "+*preset+" (random weights in memory)", *dtype
	}
	loadTime := time.Since(start)
	deviceNote := ""
	if devKind != "cpu" {
		// The GPU measures the network uploaded from the checkpoint;
		// --device auto stays on the CPU when that cannot be done.
		line.stage("measuring on the GPU")
		rep, table, err := gpuBench(net, ordinal, gpuBenchOptions{Prefill: *pp, Positions: pos, Streams: str, Steps: *steps, Seed: *seed})
		if err == nil {
			line.finish()
			if !*jsonOut {
				fmt.Fprintf(stdout, "model %s, read and checked in %.2f s, then uploaded\n", label, loadTime.Seconds())
				return table(stdout)
			}
			// (--int4-coarse is a CPU kernel option: the GPU runs its own.)
			return encodeGPUBench(stdout, rep, map[string]any{"model": label, "dtype": dt, "load_seconds": loadTime.Seconds(), "repack_cache": repackUse})
		}
		if devKind == "cuda" {
			return fmt.Errorf("--device %s: %w", *device, err)
		}
		deviceNote = err.Error()
		fmt.Fprintf(stderr, "device: cpu (auto: %s)\n", deviceNote)
	}
	if *coarse && dt == "awq" {
		dt = "awq, coarse int8 activations"
	}
	r, err := bench.Run(net, label, dt, loadTime, opts)
	line.finish()
	if err != nil {
		return err
	}
	r.RepackCache, r.RepackCacheBytes, r.RepackCacheHugeMappedBytes = repackUse, repackBytes, repackHuge
	r.DeviceNote = deviceNote
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.WriteTable(stdout)
}

// kvCacheFlag adds --kv-cache to a command that loads a model.
func kvCacheFlag(fs *flag.FlagSet, def string) *string {
	v := kvCacheValue(def)
	fs.Var(&v, "kv-cache", "how streams store keys and values: bf16 (half the memory of f32), int8 (about a quarter: int8 codes, one scale per head and position), int4 (about an eighth: rotated 4-bit codes; least accurate, see docs/KVCACHE.md) or f32 (exact)")
	return (*string)(&v)
}

// kvCacheValue is a --kv-cache value, checked as it is parsed.
type kvCacheValue string

func (v *kvCacheValue) String() string { return string(*v) }

func (v *kvCacheValue) Set(s string) error {
	if _, err := qwen3.ParseKVType(s); err != nil {
		return err
	}
	*v = kvCacheValue(s)
	return nil
}

// parseInts reads a comma-separated list of non-negative integers.
func parseInts(flagName, s string) ([]int, error) {
	out := []int{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, usageErrorf("--%s: %q is not a non-negative integer", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// gpuBenchOptions are bench's measurements for the GPU backend.
type gpuBenchOptions struct {
	Prefill            int
	Positions, Streams []int
	Steps              int
	Seed               uint64
}

// gpuBench measures net on GPU ordinal and returns the report (for
// --json) and its table writer. cuda_on.go sets it in a build with the
// cuda tag; without it there is no GPU backend to measure.
var gpuBench = func(net *qwen3.Model, ordinal int, o gpuBenchOptions) (report any, table func(io.Writer) error, err error) {
	return nil, nil, errNoCUDA
}

// encodeGPUBench prints the GPU report as one JSON object with the keys of
// the CPU report where they mean the same (decode, batched,
// prefill_tokens_per_s, kv_bytes_per_token), plus head's.
func encodeGPUBench(w io.Writer, rep any, head map[string]any) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k, v := range head {
		m[k] = v
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}
