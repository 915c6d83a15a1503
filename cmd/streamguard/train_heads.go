package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamguard/streamguard/internal/train"
)

func init() {
	register(&command{
		name:    "train-heads",
		summary: "train new guard heads (your own categories) on a frozen backbone",
		run:     runTrainHeads,
	})
}

// defaultFeatureCache is where features are cached unless --cache-dir says
// otherwise; empty when the system has no user cache folder.
func defaultFeatureCache() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "streamguard", "train-features")
}

func runTrainHeads(args []string, stdout, stderr io.Writer) error {
	def := train.DefaultOptions()
	fs := newFlagSet("train-heads", "--model DIR|ORG/NAME[@REV] --data FILE.jsonl --out DIR [flags]", stderr)
	model := fs.String("model", "", "source model (BF16/F16/F32 or AWQ INT4 backbone), a folder or hub id ORG/NAME[@REV]; its backbone stays frozen")
	data := fs.String("data", "", `training data: one {"messages": [...], "prompt": {...}, "response": {...}} per line (docs/TRAINING.md)`)
	out := fs.String("out", "", "new model folder (created; must not exist or be empty)")
	val := fs.String("val", "", "validation data (same format); default: split --val-fraction off --data")
	valFraction := fs.Float64("val-fraction", def.ValFraction, "share of --data's conversations held out for validation when --val is not given (0: none, no early stopping)")
	categories := fs.String("categories", "", `comma-separated categories in head order (default: the model's when the data uses only those and --init existing, else the data's in order of appearance)`)
	paths := fs.String("paths", "", "heads to train: query, response or query,response (default: every path the data labels)")
	initFrom := fs.String("init", def.Init, "start from the model's heads (existing: matching category rows kept) or random")
	inner := fs.Int("inner", 0, "guard_inner_size of the new heads (0: the model's; another size needs both paths and --init random)")
	epochs := fs.Int("epochs", def.Epochs, "maximum epochs")
	batch := fs.Int("batch", def.Batch, "mini-batch size")
	patience := fs.Int("patience", def.Patience, "stop after this many epochs without a lower validation loss (0: never)")
	lr := fs.Float64("lr", def.LR, "AdamW learning rate")
	wd := fs.Float64("weight-decay", def.WeightDecay, "AdamW weight decay (not applied to the RMSNorm weight)")
	seed := fs.Uint64("seed", def.Seed, "random seed: the same seed, data and model give the same heads")
	cacheDir := fs.String("cache-dir", defaultFeatureCache(), "feature cache folder")
	noCache := fs.Bool("no-cache", false, "neither read nor write the feature cache")
	threads := threadsFlag(fs, "goroutines for the backbone and head kernels, `n` up to 1024 (0: GOMAXPROCS)")
	device := deviceFlag(fs) // the backbone's feature pass; the heads train on the CPU
	copyFiles := fs.Bool("copy", false, "copy the backbone files instead of hard-linking them")
	predictions := fs.String("predictions", "", "write the validation verdicts of the new model, one JSON line per labelled position, to FILE")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	jsonOut := fs.Bool("json", false, "print the report as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *model == "":
		return usageErrorf("--model is required")
	case *data == "":
		return usageErrorf("--data is required")
	case *out == "":
		return usageErrorf("--out is required")
	}
	o := def
	o.Data, o.Out, o.Val, o.ValFraction = *data, *out, *val, *valFraction
	o.Init, o.Inner, o.Epochs, o.Batch, o.Patience = *initFrom, *inner, *epochs, *batch, *patience
	o.LR, o.WeightDecay, o.Seed, o.Threads, o.Copy, o.Device = *lr, *wd, *seed, *threads, *copyFiles, *device
	if *categories != "" {
		for _, c := range strings.Split(*categories, ",") {
			o.Categories = append(o.Categories, strings.TrimSpace(c))
		}
	}
	if *paths != "" {
		p, err := train.ParsePaths(*paths)
		if err != nil {
			return usageErrorf("--paths: %v", err)
		}
		o.Paths = p
	}
	if !*noCache {
		o.CacheDir = *cacheDir
	}
	if !*quiet {
		o.Log = stderr
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	o.Model = dir
	if err := o.Check(); err != nil {
		return usageErrorf("%v", err)
	}
	rep, err := train.Run(context.Background(), o)
	if err != nil {
		return err
	}
	if *predictions != "" {
		f, err := os.Create(*predictions)
		if err != nil {
			return err
		}
		werr := rep.WritePredictions(f)
		if err := f.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return werr
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}
