package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
)

func init() {
	register(&command{
		name:    "forward",
		summary: "run token ids through a model and write hidden states and head logits as JSON",
		run:     runForward,
	})
}

// forwardCase is one id sequence's outputs, in the layout of the goldens
// tools/reference writes, so tools/reference/compare.py reads both.
type forwardCase struct {
	Name          string      `json:"name"`
	IDs           []int       `json:"ids"`
	Hidden        [][]float32 `json:"hidden"`
	Risk          [][]float32 `json:"risk_logits"`
	Category      [][]float32 `json:"category_logits"`
	QueryRisk     [][]float32 `json:"query_risk_logits"`
	QueryCategory [][]float32 `json:"query_category_logits"`
}

func runForward(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("forward", "--model DIR|ORG/NAME[@REV] (--ids 1,2,3 | --ids-file CASES.json) [--out FILE.json]", stderr)
	model := fs.String("model", "", modelFlagHelp)
	idsFlag := fs.String("ids", "", "comma-separated token ids (one case, named \"ids\")")
	idsFile := fs.String("ids-file", "", `JSON file {"cases": [{"name": ..., "ids": [...]}, ...]}`)
	out := fs.String("out", "-", "output file (- for stdout)")
	kvCache := kvCacheFlag(fs, "f32") // exact by default: forward is for comparing engines
	repackCache := repackCacheFlag(fs)
	device := deviceFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *model == "" {
		return usageErrorf("--model is required")
	}
	if (*idsFlag == "") == (*idsFile == "") {
		return usageErrorf("give exactly one of --ids and --ids-file")
	}
	var cases []forwardCase
	if *idsFlag != "" {
		var ids []int
		for _, f := range strings.Split(*idsFlag, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return usageErrorf("--ids: %q is not an integer", f)
			}
			ids = append(ids, n)
		}
		cases = []forwardCase{{Name: "ids", IDs: ids}}
	} else {
		b, err := os.ReadFile(*idsFile)
		if err != nil {
			return err
		}
		var in struct {
			Cases []forwardCase `json:"cases"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("%s: %w", *idsFile, err)
		}
		cases = in.Cases
		for i, c := range cases {
			if len(c.IDs) == 0 {
				return fmt.Errorf("%s: case %d (%q) has no ids", *idsFile, i, c.Name)
			}
			cases[i] = forwardCase{Name: c.Name, IDs: c.IDs}
		}
	}

	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	m, err := guard.Load(context.Background(), dir, guard.Options{KVCache: *kvCache, RepackCache: *repackCache, Device: *device})
	if err != nil {
		return err
	}
	defer m.Close()
	reportRepack(stderr, m)
	reportDevice(stderr, *device, m)
	for i := range cases {
		c := &cases[i]
		outs, err := guardhook.Forward(m, [][]int{c.IDs})
		if err != nil {
			return fmt.Errorf("case %q: %w", c.Name, err)
		}
		o := outs[0]
		c.Hidden, c.Risk, c.Category, c.QueryRisk, c.QueryCategory = o.Hidden, o.Risk, o.Category, o.QueryRisk, o.QueryCategory
	}

	w := stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := json.NewEncoder(w).Encode(struct {
		Model string        `json:"model"`
		Cases []forwardCase `json:"cases"`
	}{*model, cases}); err != nil {
		return err
	}
	if f, ok := w.(*os.File); ok && w != stdout {
		return f.Close()
	}
	return nil
}
