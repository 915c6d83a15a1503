package main

import (
	"bufio"
	"encoding/json"
	"io"

	"github.com/streamguard/streamguard/internal/checkpoint"
)

func init() {
	register(&command{
		name:    "verify",
		summary: "strict load report: check a model folder's config, tokenizer and every tensor",
		run:     runVerify,
	})
}

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "DIR|ORG/NAME[@REV] [--json]", stderr)
	jsonOut := fs.Bool("json", false, "print the report as one JSON object")
	// Accept the flag after DIR too, as in `verify DIR --json`.
	var dirs []string
	rest := args
	for {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		dirs = append(dirs, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(dirs) != 1 {
		return usageErrorf("want exactly one model folder, got %d", len(dirs))
	}
	dir, err := resolveModel(dirs[0], stderr)
	if err != nil {
		return err
	}
	r, err := checkpoint.Report(dir)
	if err != nil {
		return err
	}
	// The tokenizer is checked as loading checks it: its vocabulary fits
	// vocab_size and the chat scaffold maps to the ids the model expects.
	r.CheckTokenizerFile()
	// A report has a line per tensor; buffer them into few writes.
	bw := bufio.NewWriter(stdout)
	if *jsonOut {
		enc := json.NewEncoder(bw)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			OK bool `json:"ok"`
			*checkpoint.LoadReport
		}{r.OK(), r}); err != nil {
			return err
		}
	} else if err := r.WriteText(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if !r.OK() {
		return errSilent
	}
	return nil
}
