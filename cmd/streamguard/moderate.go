package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/streamguard/streamguard/guard"
)

func init() {
	register(&command{
		name:    "moderate",
		summary: "judge a prompt and a response token by token (or JSON lines of conversations)",
		run: func(args []string, stdout, stderr io.Writer) error {
			return runModerate(args, os.Stdin, stdout, stderr)
		},
	})
}

// maxJSONLLine bounds one input line of --jsonl.
const maxJSONLLine = 64 << 20

// thresholdFlags collects repeated --threshold CATEGORY=P flags.
type thresholdFlags map[string]float32

func (t thresholdFlags) String() string { return fmt.Sprint(map[string]float32(t)) }

func (t thresholdFlags) Set(s string) error {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want CATEGORY=PROBABILITY, got %q", s)
	}
	p, err := strconv.ParseFloat(val, 32)
	if err != nil {
		return fmt.Errorf("threshold %q: %v", s, err)
	}
	t[name] = float32(p)
	return nil
}

func runModerate(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("moderate", "--model DIR (--prompt TEXT [--response TEXT] | --jsonl) [flags]", stderr)
	model := fs.String("model", "", "model folder")
	prompt := fs.String("prompt", "", "the user's message")
	system := fs.String("system", "", "an optional system message before the prompt")
	response := fs.String("response", "", "the assistant's response, judged token by token")
	jsonl := fs.Bool("jsonl", false, `read {"messages": [...]} lines on stdin, write one JSON result per line`)
	jsonOut := fs.Bool("json", false, "print the result as one JSON object")
	mode := fs.String("mode", "strict", "strict (Controversial counts as unsafe) or loose")
	debounce := fs.Int("debounce", guard.DefaultDebounce, "consecutive non-safe tokens that flag a response")
	thresholds := thresholdFlags{}
	fs.Var(thresholds, "threshold", "CATEGORY=P: flag that category when P(Unsafe) (+P(Controversial) if strict) >= P; repeatable")
	block := fs.String("block", "", "comma-separated categories that alone may flag (default: all)")
	threads := fs.Int("threads", 0, "kernel goroutines (0: GOMAXPROCS)")
	coarse := fs.Bool("int4-coarse", false, "INT4 models: one int8 activation row per token instead of a row plus its residual (faster, less exact)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *model == "" {
		return usageErrorf("--model is required")
	}
	if *jsonl == (*prompt != "") {
		return usageErrorf("give either --prompt or --jsonl")
	}
	if *jsonl && (*response != "" || *system != "") {
		return usageErrorf("--response and --system go with --prompt, not --jsonl")
	}
	m, err := guard.ParseMode(*mode)
	if err != nil {
		return usageErrorf("--mode: %v", err)
	}
	if *debounce < 1 {
		return usageErrorf("--debounce must be at least 1")
	}
	policy := guard.Policy{Mode: m, Debounce: *debounce, Thresholds: thresholds}
	if *block != "" {
		policy.Block = strings.Split(*block, ",")
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	g, err := guard.Load(dir, guard.Options{Threads: *threads, Int4Coarse: *coarse, Policy: policy})
	if err != nil {
		return err
	}
	defer g.Close()

	if *jsonl {
		return moderateJSONL(g, stdin, stdout)
	}
	var msgs []guard.Message
	if *system != "" {
		msgs = append(msgs, guard.Message{Role: "system", Content: *system})
	}
	msgs = append(msgs, guard.Message{Role: "user", Content: *prompt})
	if *response != "" {
		msgs = append(msgs, guard.Message{Role: "assistant", Content: *response})
	}
	res, err := g.Moderate(msgs, nil)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return writeResult(stdout, res)
}

// jsonlResult is one output line: the result, or the error for that line.
type jsonlResult struct {
	Line  int             `json:"line"`
	ID    json.RawMessage `json:"id,omitempty"`
	Error string          `json:"error,omitempty"`
	*guard.Result
}

func moderateJSONL(g *guard.Model, stdin io.Reader, stdout io.Writer) error {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), maxJSONLLine)
	enc := json.NewEncoder(stdout)
	failed := 0
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var in struct {
			ID       json.RawMessage `json:"id"`
			Messages []guard.Message `json:"messages"`
		}
		out := jsonlResult{Line: line}
		if err := json.Unmarshal([]byte(text), &in); err != nil {
			out.Error = "invalid JSON: " + err.Error()
		} else {
			out.ID = in.ID
			res, err := g.Moderate(in.Messages, nil)
			if err != nil {
				out.Error = err.Error()
			}
			out.Result = res
		}
		if out.Error != "" {
			failed++
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("stdin line %d is longer than %d bytes", line+1, maxJSONLLine)
		}
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d lines failed (see their \"error\" fields)", failed, line)
	}
	return nil
}

// writeResult prints a result as a table.
func writeResult(w io.Writer, res *guard.Result) error {
	p := res.Prompt
	flag := ""
	if p.Flagged {
		flag = "  FLAGGED"
	}
	fmt.Fprintf(w, "prompt: %s %.2f (category %s %.2f)%s\n", p.Risk, p.RiskProb, p.Category, p.CategoryProb, flag)
	fmt.Fprintf(w, "        risk probabilities %s\n", formatProbs(p.RiskProbs))
	if res.Decision == nil {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tTOKEN\tRISK\tP\tCATEGORY\tP\t")
	for _, t := range res.Tokens {
		mark := ""
		if t.NonSafe {
			mark = "*"
		}
		if t.Flagged {
			mark = "* FLAGGED"
		}
		fmt.Fprintf(tw, "%d\t%q\t%s\t%.2f\t%s\t%.2f\t%s\n", t.Index, t.Text, t.Risk, t.RiskProb, t.Category, t.CategoryProb, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if res.FlaggedIndex >= 0 {
		t := res.Tokens[res.FlaggedIndex]
		fmt.Fprintf(w, "flagged at token %d %q (%s, %s)\n", t.Index, t.Text, t.Risk, t.Category)
	} else {
		fmt.Fprintln(w, "not flagged")
	}
	d := res.Decision
	switch {
	case d.Flagged:
		fmt.Fprintf(w, "decision: %s (run of %s tokens ending at token %d, category %s; %d tokens judged)\n", d.Risk, d.Level, d.Index, d.Category, d.Tokens)
	case d.Level != "":
		fmt.Fprintf(w, "decision: %s (loose mode ignores the %s run ending at token %d; %d tokens judged)\n", d.Risk, d.Level, d.Index, d.Tokens)
	default:
		fmt.Fprintf(w, "decision: %s (%d tokens judged)\n", d.Risk, d.Tokens)
	}
	return nil
}

// formatProbs prints a probability vector compactly.
func formatProbs(p []float32) string {
	parts := make([]string, len(p))
	for i, v := range p {
		parts[i] = fmt.Sprintf("%.3f", v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
