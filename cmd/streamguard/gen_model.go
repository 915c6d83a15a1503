package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/synth"
)

func init() {
	register(&command{
		name:    "gen-model",
		summary: "write a synthetic model folder (random weights, real shapes and tokenizer)",
		run:     runGenModel,
	})
}

func runGenModel(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gen-model", "--preset NAME --out DIR [flags]", stderr)
	preset := fs.String("preset", "tiny", "model shape: "+strings.Join(config.PresetNames(), ", "))
	dtype := fs.String("dtype", "", "weight format: f32, bf16, f16, or awq (AWQ GEMM INT4 backbone, fp16 rest); default bf16, awq with --noesis")
	seed := fs.Uint64("seed", 1, "random seed; the same seed gives byte-identical files")
	out := fs.String("out", "", "output folder (created; must not already hold a checkpoint unless --force)")
	force := fs.Bool("force", false, "overwrite the checkpoint an existing --out folder holds (its *.safetensors files and shard index are removed first)")
	outliers := fs.Int("outlier-channels", 0, fmt.Sprintf("scale this many hidden channels by %d in the embedding and the layer input norms", synth.OutlierFactor))
	noesis := fs.Bool("noesis", false, "write a replica of the broken public INT4 export (Qwen3ForCausalLM config, AWQ backbone, no guard heads, random lm_head)")
	group := fs.Int("group", 0, "AWQ group size (0: 128, or the largest power of two below it dividing every in_features)")
	shards := fs.Int("shards", 0, "number of safetensors files (0: as the real repositories, 2 for 4B, 4 for 8B, else 1)")
	layers := fs.Int("layers", 0, "keep only this many of the preset's layers (0: all): the real shapes, quicker to run")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usageErrorf("--out DIR is required")
	}
	// Checked here as well as by synth, so that a name not on the list is
	// a usage error (exit 2) like any other flag mistake.
	if !slices.Contains(config.PresetNames(), *preset) {
		return usageErrorf("--preset %q: want one of %s", *preset, strings.Join(config.PresetNames(), ", "))
	}
	if *dtype != "" && !slices.Contains(synth.DTypes, *dtype) {
		return usageErrorf("--dtype %q: want one of %s", *dtype, strings.Join(synth.DTypes, ", "))
	}
	start := time.Now()
	o := synth.Options{Preset: *preset, DType: *dtype, Seed: *seed,
		OutlierChannels: *outliers, Noesis: *noesis, Group: *group, Shards: *shards, Force: *force, Layers: *layers}
	// On a terminal, writes longer than a second (0.6B and up) show a bar.
	bar := newByteBar(progressTo(stderr, *jsonOut), "gen-model: writing", 0)
	if bar != nil {
		o.Progress = func(done, total int64) { bar.total = total; bar.set(done) }
	}
	res, err := synth.Generate(*out, o)
	bar.finish()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"dir": res.Dir, "preset": *preset, "dtype": res.DType, "awq_group": res.Group,
			"noesis": *noesis, "seed": *seed, "files": res.Files, "tensors": res.Tensors, "tensor_bytes": res.Bytes,
			"outlier_channels": res.OutlierChannels, "seconds": elapsed.Seconds(),
		})
	}
	kind := "guard model"
	if *noesis {
		kind = "replica of the broken INT4 export"
	}
	fmt.Fprintf(stdout, "wrote %s: %s %s %s, %d tensors, %.2f GiB in %d file(s), %.1fs\n", res.Dir, *preset, res.DType, kind,
		res.Tensors, float64(res.Bytes)/(1<<30), len(res.Files), elapsed.Seconds())
	if res.Group > 0 {
		fmt.Fprintf(stdout, "AWQ GEMM w4 group %d\n", res.Group)
	}
	if len(res.OutlierChannels) > 0 {
		fmt.Fprintf(stdout, "outlier channels (×%d): %v\n", synth.OutlierFactor, res.OutlierChannels)
	}
	return nil
}
