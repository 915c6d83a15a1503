package main

import (
	"context"
	"fmt"
	"io"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
)

func init() {
	register(&command{
		name:    "prepare",
		summary: "load a model once as serve would and keep its AWQ weights repacked, so later loads take seconds",
		run:     runPrepare,
	})
}

// runPrepare loads the model with the same checks as every command and
// reports how it used the repacked-weights file: where a deployment's
// model volume is writable only at setup (an init container, an image
// build), this is the step that writes it.
func runPrepare(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("prepare", "--model DIR|ORG/NAME [--repack-cache auto|DIR]", stderr)
	model := fs.String("model", "", "model folder or hub id")
	repackCache := repackCacheFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *model == "" || fs.NArg() > 0 {
		return usageErrorf("give --model and nothing else")
	}
	if *repackCache == "off" {
		return usageErrorf("--repack-cache off: nothing to prepare")
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	m, err := guard.Load(context.Background(), dir, guard.Options{RepackCache: *repackCache})
	if err != nil {
		return err
	}
	defer m.Close()
	i := m.Info()
	use := i.RepackCache.String()
	if use == "" {
		use = "nothing to repack (not an AWQ model)"
	}
	if size, huge, ok := guardhook.Weights(m).PackMapping(); ok && huge >= 0 && size > 0 {
		// Whether loads find the file in 2 MiB folios, which makes them
		// several times faster (docs/CLI.md).
		use += fmt.Sprintf(" (%.0f%% of it mapped 2 MiB at a time)", 100*float64(huge)/float64(size))
	}
	fmt.Fprintf(stdout, "%s: loaded in %.2f s; %s\n", dir, i.LoadTime.Seconds(), use)
	return nil
}
