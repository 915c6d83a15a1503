package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/streamguard/streamguard/internal/awq/quantize"
)

func init() {
	register(&command{
		name:    "graft",
		summary: "repair a headless INT4 bundle with the 8 guard heads of its source checkpoint",
		run:     runGraft,
	})
}

func runGraft(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("graft", "--backbone INT4_DIR|ORG/NAME[@REV] --heads-from GUARD_DIR|ORG/NAME[@REV] --out DIR [--json]", stderr)
	backbone := fs.String("backbone", "", "the headless AWQ INT4 bundle (e.g. an export saved as Qwen3ForCausalLM): a folder or hub id ORG/NAME[@REV]")
	headsFrom := fs.String("heads-from", "", "the Qwen3Guard-Stream checkpoint the backbone was quantized from: a folder or hub id ORG/NAME[@REV]")
	out := fs.String("out", "", "output folder (created; must not already hold a checkpoint)")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *backbone == "" || *headsFrom == "" || *out == "" {
		return usageErrorf("--backbone, --heads-from and --out are required")
	}
	b, err := resolveModel(*backbone, stderr)
	if err != nil {
		return err
	}
	h, err := resolveModel(*headsFrom, stderr)
	if err != nil {
		return err
	}
	res, err := quantize.Graft(quantize.GraftOptions{Backbone: b, HeadsFrom: h, Out: *out, Version: version})
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
	fmt.Fprintf(stdout, "wrote %s (%s) in %.1fs\n", res.Out, strings.Join(res.Files, ", "), res.Seconds)
	for _, c := range res.Checks {
		fmt.Fprintf(stdout, "  check: %s\n", c)
	}
	for _, hd := range res.Heads {
		fmt.Fprintf(stdout, "  head:  %s\n", hd)
	}
	if len(res.Dropped) > 0 {
		fmt.Fprintf(stdout, "  dropped: %s\n", strings.Join(res.Dropped, ", "))
	}
	return nil
}
