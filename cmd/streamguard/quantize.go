package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/streamguard/streamguard/internal/awq/quantize"
	"github.com/streamguard/streamguard/internal/kernels"
)

func init() {
	register(&command{
		name:    "quantize",
		summary: "quantize a guard checkpoint to AWQ INT4 (heads kept), verify it and report its quality",
		run:     runQuantize,
	})
}

func runQuantize(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("quantize", "--model DIR|ORG/NAME[@REV] --out DIR [flags]", stderr)
	model := fs.String("model", "", "source model (BF16, F16 or F32 Qwen3Guard-Stream checkpoint): a folder or hub id ORG/NAME[@REV]")
	out := fs.String("out", "", "output folder (created; must not already hold a checkpoint)")
	method := fs.String("method", "awq", "awq (activation-aware scale and clipping search) or rtn (plain round-to-nearest)")
	calib := fs.String("calib", "", "calibration text: .jsonl lines of {\"text\": ...} or {\"messages\": [...]}, or plain text (documents separated by blank lines); default: a built-in set")
	samples := fs.Int("samples", quantize.DefaultSamples, "calibration sequences")
	seqlen := fs.Int("seqlen", quantize.DefaultSeqLen, "tokens per calibration sequence")
	searchTokens := fs.Int("search-tokens", quantize.DefaultSearchTokens, "calibration tokens (whole sequences, at least one) that score each candidate scale")
	group := fs.Int("group", 0, "group size along the inputs (0: 128, or the largest power of two below it that divides every in_features)")
	seed := fs.Uint64("seed", quantize.DefaultSeed, "shuffles the calibration documents")
	kernel := fs.String("search-kernel", string(quantize.SearchInt4), "how candidate scales are scored: int4 (the engine's INT4 kernels, fast) or float (fake-quantized float32, as AutoAWQ)")
	heldout := fs.String("heldout", "", "held-out text for the quality report, same formats as --calib (default: built-in conversations)")
	noEval := fs.Bool("no-eval", false, "skip the quality report (the strict reload still runs)")
	layers := fs.Int("layers", 0, "measurement run: process only the first N layers, write nothing, and estimate the full run's time")
	threads := threadsFlag(fs, "kernel goroutines, `n` up to 1024 (0: GOMAXPROCS)")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof reads it)")
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
	if *model == "" {
		return usageErrorf("--model DIR is required")
	}
	if *out == "" && *layers == 0 {
		return usageErrorf("--out DIR is required (or --layers N for a measurement run)")
	}
	if *samples <= 0 || *seqlen <= 0 || *searchTokens <= 0 || *layers < 0 || *group < 0 {
		return usageErrorf("--samples, --seqlen and --search-tokens must be positive, --layers and --group not negative")
	}
	// A usage error (exit 2) before the model is fetched or loaded.
	if m := quantize.Method(*method); m != quantize.AWQ && m != quantize.RTN {
		return usageErrorf("--method %q: want %s or %s", *method, quantize.AWQ, quantize.RTN)
	}
	src, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	o := quantize.Options{Source: src, Out: *out, Method: quantize.Method(*method), Group: *group,
		Samples: *samples, SeqLen: *seqlen, SearchTokens: *searchTokens, Seed: *seed,
		SearchKernel: quantize.SearchKernel(*kernel), SkipEval: *noEval, Layers: *layers,
		Version: version, Progress: stderr}
	if *calib != "" {
		if o.Calibration, err = quantize.ReadDataset(*calib); err != nil {
			return err
		}
	}
	if *heldout != "" {
		if o.HeldOut, err = quantize.ReadDataset(*heldout); err != nil {
			return err
		}
	}
	if *threads > 0 {
		kernels.SetThreads(*threads)
	}
	res, err := quantize.Quantize(o)
	if err != nil {
		if res != nil && res.Report != nil {
			_ = res.Report.WriteText(stderr)
		}
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printQuantizeResult(stdout, res)
	return nil
}

func printQuantizeResult(w io.Writer, r *quantize.Result) {
	if r.Measured {
		var sum float64
		for _, s := range r.LayerStats {
			sum += s.Seconds
		}
		fmt.Fprintf(w, "measurement run: %d of %d layers of %s, %s, group %d\n", r.Layers, r.TotalLayers, r.Source, r.Method, r.Group)
		printCalib(w, r)
		printLayers(w, r)
		fmt.Fprintf(w, "setup %.1fs, embedding %.1fs, %.1fs per layer on average\n", r.SetupSeconds, r.EmbedSeconds, sum/float64(len(r.LayerStats)))
		fmt.Fprintf(w, "estimated full quantization (%d layers, without the quality report): %.0fs (%.1f min)\n", r.TotalLayers, r.EstimatedSeconds, r.EstimatedSeconds/60)
		return
	}
	fmt.Fprintf(w, "wrote %s: %s INT4 w4 g%d, %d layers, %.2f GiB in %s\n", r.Out, r.Method, r.Group, r.Layers,
		float64(r.Bytes)/(1<<30), strings.Join(r.Files, ", "))
	printCalib(w, r)
	fmt.Fprintf(w, "time: quantize %.1fs (setup %.1fs, embedding %.1fs), verify %.1fs, quality report %.1fs, total %.1fs\n",
		r.QuantizeSeconds, r.SetupSeconds, r.EmbedSeconds, r.VerifySeconds, r.EvalSeconds, r.Seconds)
	fmt.Fprintln(w, "strict load report: OK (8 guard heads kept in source precision)")
	if q := r.Quality; q != nil {
		printQuality(w, q)
	}
}

func printCalib(w io.Writer, r *quantize.Result) {
	if r.Method == quantize.AWQ {
		fmt.Fprintf(w, "calibration: %s, %d×%d tokens, scales scored on %d tokens with the %s kernels, seed %d\n",
			r.Calibration, r.Samples, r.SeqLen, r.SearchTokens, r.SearchKernel, r.Seed)
	}
}

func printLayers(w io.Writer, r *quantize.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tSECONDS\tFORWARD\tSEARCH\tCLIP\tPACK\tRATIOS")
	for _, s := range r.LayerStats {
		var ratios []string
		for _, g := range []string{"attn", "o", "mlp", "down"} {
			if v, ok := s.Ratios[g]; ok {
				ratios = append(ratios, fmt.Sprintf("%s=%.2f", g, v))
			}
		}
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\n", s.Layer, s.Seconds, s.Forward, s.Search, s.Clip, s.Pack, strings.Join(ratios, " "))
	}
	tw.Flush()
}

func printQuality(w io.Writer, q *quantize.Quality) {
	fmt.Fprintf(w, "quality, source vs INT4 on %d held-out conversations (%d positions):\n", q.Conversations, q.Positions)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  HEAD\tAGREE\tAT VERDICTS\tKL MEAN\tKL MAX")
	for _, h := range q.Heads {
		fmt.Fprintf(tw, "  %s\t%.1f%%\t%.1f%% (%d)\t%.2e\t%.2e\n", h.Head, 100*h.Agreement, 100*h.VerdictAgreement, h.VerdictPositions, h.KLMean, h.KLMax)
	}
	tw.Flush()
	fmt.Fprintf(w, "  hidden state relative error: mean %.4f, max %.4f\n", q.HiddenRelErrMean, q.HiddenRelErrMax)
}
