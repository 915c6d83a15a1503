package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/streamguard/streamguard/internal/hub"
)

func init() {
	register(&command{
		name:    "pull",
		summary: "download a model from a Hugging Face–compatible hub into the shared cache",
		run:     runPull,
	})
}

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runPull(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pull", "ORG/NAME[@REVISION] [flags]", stderr)
	var include stringList
	fs.Var(&include, "include", "download only files matching this glob (repeatable), e.g. '*.json'")
	parallel := fs.Int("parallel", 8, "files downloaded at once")
	jsonOut := fs.Bool("json", false, "print the result as one JSON object")
	quiet := fs.Bool("quiet", false, "no progress bar (there is none either when stderr is not a terminal, or with --json)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: streamguard pull ORG/NAME[@REVISION] [flags]

Downloads a model repository into the Hugging Face cache shared with Python
tools ($HF_HUB_CACHE, or $HF_HOME/hub, or ~/.cache/huggingface/hub) and
prints the snapshot folder. Files already in the cache are verified, not
downloaded again; an interrupted pull resumes.

Environment: HF_ENDPOINT (hub URL, default %s), HF_TOKEN (or the token
file of 'hf auth login'), HF_HUB_OFFLINE=1 (cache only), HF_HOME, HF_HUB_CACHE.

Flags:
`, hub.DefaultEndpoint)
		fs.PrintDefaults()
	}
	var refs []string
	rest := args
	for {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		refs = append(refs, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(refs) != 1 {
		return usageErrorf("want exactly one ORG/NAME[@REVISION], got %d", len(refs))
	}
	ref, err := hub.ParseRef(refs[0])
	if err != nil {
		return usageErrorf("%v", err)
	}
	if *parallel < 1 {
		return usageErrorf("--parallel must be at least 1")
	}
	c := hub.NewClient(hubEnv())
	c.Parallel = *parallel
	opts := hub.PullOptions{Include: include}
	if w := progressTo(stderr, *quiet || *jsonOut); w != nil {
		opts.Progress = w
	}
	s, err := c.Pull(context.Background(), ref, opts)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return writeSnapshot(stdout, s)
}

func writeSnapshot(w io.Writer, s *hub.Snapshot) error {
	if s.FromCache {
		fmt.Fprintf(w, "%s: offline, commit %s from the cache\n", s.Ref, s.Commit)
	} else {
		fmt.Fprintf(w, "%s: commit %s\n", s.Ref, s.Commit)
	}
	if len(s.Files) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tSIZE\tSTATUS\tVERIFIED")
		for _, f := range s.Files {
			status := f.Status
			if f.ResumedFrom > 0 {
				status += fmt.Sprintf(" (from byte %d)", f.ResumedFrom)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", f.Name, f.Size, status, f.Verified)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintln(w, s.Dir)
	return err
}
