package main

import (
	"context"
	"encoding/json"
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
	fs := newFlagSet("prepare", "--model DIR|ORG/NAME[@REV] [--repack-cache auto|DIR] [--json]", stderr)
	model := fs.String("model", "", modelFlagHelp)
	repackCache := repackCacheFlag(fs)
	jsonOut := fs.Bool("json", false, "print the result as one JSON object (fields in docs/CLI.md)")
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
	rep := prepareReport{
		Dir: dir, LoadSeconds: i.LoadTime.Seconds(), RepackCache: i.RepackCache.String(),
		Path: i.RepackCache.Path, Mapped: i.RepackCache.Mapped, Wrote: i.RepackCache.Wrote, Notes: i.RepackCache.Notes,
	}
	if rep.Notes == nil {
		rep.Notes = []string{}
	}
	size, huge, packed := guardhook.Weights(m).PackMapping()
	if packed {
		rep.Bytes = size
		if huge >= 0 {
			rep.HugeMappedBytes = &huge
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	use := rep.RepackCache
	if use == "" {
		use = "nothing to repack (not an AWQ model)"
	}
	if rep.HugeMappedBytes != nil && size > 0 {
		// Whether loads find the file in 2 MiB folios, which makes them
		// several times faster (docs/CLI.md).
		use += fmt.Sprintf(" (%.0f%% of it mapped 2 MiB at a time)", 100*float64(huge)/float64(size))
	}
	fmt.Fprintf(stdout, "%s: loaded in %.2f s; %s\n", dir, rep.LoadSeconds, use)
	return nil
}

// prepareReport is prepare --json: what the text line says, field by
// field, named as bench --json names the same facts.
type prepareReport struct {
	Dir         string  `json:"dir"`
	LoadSeconds float64 `json:"load_seconds"`
	// RepackCache is the text form: "mapped PATH" or "repacked, written
	// to PATH", then any notes; "" for a model with nothing to repack.
	RepackCache string   `json:"repack_cache"`
	Path        string   `json:"repack_cache_path"`
	Mapped      bool     `json:"repack_cache_mapped"`
	Wrote       bool     `json:"repack_cache_wrote"`
	Notes       []string `json:"repack_cache_notes"`
	// Bytes is the repacked-weights file's size (0: none), and
	// HugeMappedBytes how much of it is mapped 2 MiB at a time (null where
	// the system does not say).
	Bytes           int64  `json:"repack_cache_bytes"`
	HugeMappedBytes *int64 `json:"repack_cache_huge_mapped_bytes"`
}
