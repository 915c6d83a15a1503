package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/eval"
)

func init() {
	register(&command{
		name:    "eval",
		summary: "measure a model on a labelled JSON-lines set: P/R/F1, categories, detection positions",
		run:     runEval,
	})
}

const evalHelp = `Usage: streamguard eval --model DIR|ORG/NAME[@REV] --data FILE.jsonl [flags]

Judges every item of a labelled set and reports, for prompts and responses,
precision, recall and F1 of the unsafe class in strict mode (Controversial
counts as unsafe) and loose mode (as safe); then, in --mode, a confusion
matrix, per-category scores and, for responses with a known unsafe span, the
detection-position bins of the Qwen3Guard report (ahead, hit, 1-32, 33-64,
65-128, 129-256, >256, missed); and throughput.

Data: one JSON object per line (blank lines and # comments skipped):
  {"prompt": "...", "prompt_label": "Unsafe", "prompt_category": "Violent"}
  {"prompt": "...", "response": "...", "response_label": "Unsafe",
   "response_category": "PII", "unsafe_text": "a passage of the response"}
  {"message": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
   "label": "Unsafe", "unsafe_start_index": 57, "unsafe_end_index": 80}
Fields: id; prompt/response/system or messages (also "message"); labels
Safe/Unsafe/Controversial in prompt_label, response_label, or label (the
response's when the conversation ends with an assistant turn, else the
prompt's); prompt_category, response_category, category (a name from the
model's label map); the unsafe span as token positions in the rendered
conversation (unsafe_start_index..unsafe_end_index, inclusive, as in the
Qwen3GuardTest streaming sets) or as unsafe_text.

Flags:
`

func runEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", "", stderr)
	model := fs.String("model", "", modelFlagHelp)
	data := fs.String("data", "", "labelled JSON-lines file")
	mode := fs.String("mode", "strict", "mode of the confusion matrix, categories and position bins: strict or loose")
	jsonOut := fs.Bool("json", false, "print the report, with per-item results, as one JSON object")
	htmlOut := fs.String("html", "", "also write the report as one self-contained HTML page (inline CSS and SVG, no scripts) to this file")
	batch := fs.Int("batch", 8, "conversations run together in one forward")
	debounce := fs.Int("debounce", guard.DefaultDebounce, "consecutive non-safe tokens that flag a response")
	threads := threadsFlag(fs, "kernel goroutines, `n` up to 1024 (0: GOMAXPROCS)")
	device := deviceFlag(fs)
	kvCache := kvCacheFlag(fs, "bf16")
	repackCache := repackCacheFlag(fs)
	quiet := fs.Bool("quiet", false, "no progress bar (there is none either when stderr is not a terminal, or with --json)")
	fs.Usage = func() {
		fmt.Fprint(stderr, evalHelp)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *model == "" || *data == "" {
		return usageErrorf("--model and --data are required")
	}
	m, err := guard.ParseMode(*mode)
	if err != nil {
		return usageErrorf("--mode: %v", err)
	}
	if *batch < 1 || *debounce < 1 {
		return usageErrorf("--batch and --debounce must be at least 1")
	}
	f, err := os.Open(*data)
	if err != nil {
		return err
	}
	items, err := eval.ReadItems(f, *data)
	f.Close()
	if err != nil {
		return err
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	g, err := guard.Load(context.Background(), dir, guard.Options{Threads: *threads, Device: *device, KVCache: *kvCache, RepackCache: *repackCache})
	if err != nil {
		return err
	}
	defer g.Close()
	reportDevice(stderr, *device, g)
	reportRepack(stderr, g)
	info := g.Info()
	if err := eval.CheckCategories(items, *data, info.Labels.QueryCategory, info.Labels.ResponseCategory); err != nil {
		return err
	}
	opts := eval.RunOptions{Batch: *batch, Debounce: *debounce}
	if w := progressTo(stderr, *quiet || *jsonOut); w != nil {
		opts.Progress = w
	}
	start := time.Now()
	preds, err := eval.Run(context.Background(), g, items, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}
	secs := time.Since(start).Seconds()
	rep, err := eval.Score(items, preds, m, info.Labels.QueryCategory, info.Labels.ResponseCategory)
	if err != nil {
		return err
	}
	rep.Data, rep.Model, rep.Debounce = *data, *model, *debounce
	tokens := 0
	for _, p := range preds {
		tokens += p.Tokens
	}
	rep.Throughput = eval.Throughput{Items: len(items), Tokens: tokens, Seconds: secs,
		TokensPerSecond: float64(tokens) / secs, ItemsPerSecond: float64(len(items)) / secs, LoadSeconds: info.LoadTime.Seconds()}
	if *htmlOut != "" {
		if err := writeHTMLReport(*htmlOut, rep, items); err != nil {
			return err
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}

// writeHTMLReport writes the report's page to path.
func writeHTMLReport(path string, rep *eval.Report, items []eval.Item) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(f, items); err != nil {
		f.Close()
		return fmt.Errorf("--html: %w", err)
	}
	return f.Close()
}
