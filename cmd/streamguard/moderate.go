package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/jsonkeys"
)

func init() {
	register(&command{
		name:    "moderate",
		summary: "judge a prompt and a response token by token (or JSON lines of conversations)",
		run: func(args []string, stdout, stderr io.Writer) error {
			return runModerate(args, moderateStdin, stdout, stderr)
		},
	})
}

// moderateStdin is what --jsonl reads; tests replace it.
var moderateStdin io.Reader = os.Stdin

// maxJSONLLine bounds one input line of --jsonl.
var maxJSONLLine = 64 << 20 // a variable for the tests

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
	// Checked here, as the value is parsed, so that it is a usage error
	// (exit 2) like the flag's other mistakes; the name needs the model.
	if !(p >= 0 && p <= 1) {
		return fmt.Errorf("threshold %q: want a probability from 0 to 1", s)
	}
	t[name] = float32(p)
	return nil
}

func runModerate(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("moderate", "--model DIR|ORG/NAME[@REV] (--prompt TEXT [--response TEXT] | --jsonl) [flags]", stderr)
	model := fs.String("model", "", modelFlagHelp)
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
	threads := threadsFlag(fs, "kernel goroutines, `n` up to 1024 (0: GOMAXPROCS)")
	device := deviceFlag(fs)
	kvCache := kvCacheFlag(fs, "bf16")
	repackCache := repackCacheFlag(fs)
	coarse := fs.Bool("int4-coarse", false, "INT4 models: one int8 activation row per token instead of a row plus its residual (faster, less exact)")
	fs.Usage = func() {
		fmt.Fprint(stderr, moderateHelp)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *model == "" {
		return usageErrorf("--model is required")
	}
	promptSet := false
	fs.Visit(func(f *flag.Flag) { promptSet = promptSet || f.Name == "prompt" })
	switch {
	case *jsonl && promptSet:
		return usageErrorf("give either --prompt or --jsonl, not both")
	case !*jsonl && !promptSet:
		return usageErrorf("give --prompt TEXT (and --response TEXT), or --jsonl")
	case promptSet && *prompt == "":
		// Said as such: "give either --prompt or --jsonl" would send the
		// user looking for a missing flag that is there.
		return usageErrorf("--prompt is empty: give the user's message")
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
	var blocked []string
	for name := range strings.SplitSeq(*block, ",") {
		if name = strings.TrimSpace(name); name != "" {
			blocked = append(blocked, name)
		}
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	// The model is loaded with the mode and debounce only: the categories
	// that --threshold and --block name are the model's own (config.json),
	// checked below against what it loaded.
	policy := guard.Policy{Mode: m, Debounce: *debounce}
	g, err := guard.Load(context.Background(), dir, guard.Options{Threads: *threads, Int4Coarse: *coarse, Policy: policy, Device: *device, KVCache: *kvCache, RepackCache: *repackCache})
	if err != nil {
		return err
	}
	defer g.Close()
	if err := checkCategories(g.Info().Labels, thresholds, blocked); err != nil {
		return err
	}
	policy.Thresholds, policy.Block = thresholds, blocked
	reportDevice(stderr, *device, g)
	reportRepack(stderr, g)

	if *jsonl {
		return moderateJSONL(g, &policy, stdin, stdout)
	}
	var msgs []guard.Message
	if *system != "" {
		msgs = append(msgs, guard.Message{Role: "system", Content: *system})
	}
	msgs = append(msgs, guard.Message{Role: "user", Content: *prompt})
	if *response != "" {
		msgs = append(msgs, guard.Message{Role: "assistant", Content: *response})
	}
	res, err := g.Moderate(context.Background(), msgs, &policy)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = writeResult(stdout, res, policy.Debounce)
	}
	if err != nil {
		return err
	}
	if flagged(res) {
		return errFlagged
	}
	return nil
}

const moderateHelp = `Usage: streamguard moderate --model DIR|ORG/NAME[@REV] (--prompt TEXT [--response TEXT] | --jsonl) [flags]

Judges the prompt (the last user turn) and each token of the response.
The "flagged at" line is the online rule that cuts a stream: the first
token completing a run of --debounce non-safe tokens. The "decision" line
is the official final rule over the whole response. Both always agree on
whether the response is flagged; see README for when they name different
tokens.

Exit status: 0 nothing flagged, 1 error, 2 usage error, 3 flagged (the
prompt or the response; with --jsonl, any line). A --threshold or --block
category the model does not have is a usage error that lists the model's
categories.

Flags:
`

// flagged reports whether a result flags the conversation: its prompt, or
// its response under the final rule (which flags exactly when the online
// rule does).
func flagged(res *guard.Result) bool {
	if res == nil {
		return false
	}
	if res.Prompt != nil && res.Prompt.Flagged {
		return true
	}
	return res.Decision != nil && res.Decision.Flagged
}

// jsonlResult is one output line: the result, or the error for that line.
type jsonlResult struct {
	Line    int             `json:"line"`
	ID      json.RawMessage `json:"id,omitempty"`
	Error   string          `json:"error,omitempty"`
	Skipped []string        `json:"skipped,omitempty"`
	*guard.Result
}

// jsonlKeys are the keys of a --jsonl line and of its messages that are
// read: none may be repeated or written in another case ("Content" beside
// "content" is refused, not left for another reader to take).
type jsonlKeys struct {
	ID       json.RawMessage `json:"id"`
	Messages []struct {
		Role             json.RawMessage `json:"role"`
		Content          json.RawMessage `json:"content"`
		ReasoningContent json.RawMessage `json:"reasoning_content"`
		Reasoning        json.RawMessage `json:"reasoning"`
		ReasoningDetails json.RawMessage `json:"reasoning_details"`
		ToolCalls        json.RawMessage `json:"tool_calls"`
		FunctionCall     json.RawMessage `json:"function_call"`
		ToolCallID       json.RawMessage `json:"tool_call_id"`
		Name             json.RawMessage `json:"name"`
	} `json:"messages"`
}

// jsonlMessages reads a line's messages as the server reads OpenAI
// messages (chatmsg): content parts, reasoning fields, an assistant's
// tool_calls (judged with their tags as the model's tokens) and tool
// results; media parts are skipped and named.
func jsonlMessages(raws []json.RawMessage) ([]guard.Message, []string, error) {
	var skipped chatmsg.Skipped
	turns, err := chatmsg.Conversation(raws, &skipped)
	if err != nil {
		return nil, nil, err
	}
	return guardhook.Messages[guard.Message](turns), skipped, nil
}

// checkCategories checks the category names of --threshold and --block
// against the model's labels (its config.json's category maps), as a usage
// error that lists the names the model has.
func checkCategories(l guard.Labels, thresholds map[string]float32, blocked []string) error {
	var known []string
	for _, c := range slices.Concat(l.ResponseCategory, l.QueryCategory) {
		if !slices.Contains(known, c) {
			known = append(known, c)
		}
	}
	names := make([]string, len(known))
	for i, c := range known {
		names[i] = strconv.Quote(c)
	}
	// Sorted, so that the message is the same whatever the map's order.
	for _, name := range slices.Sorted(maps.Keys(thresholds)) {
		if !slices.Contains(known, name) {
			return usageErrorf("--threshold: the model has no category %q; its categories: %s", name, strings.Join(names, ", "))
		}
	}
	for _, name := range blocked {
		if !slices.Contains(known, name) {
			return usageErrorf("--block: the model has no category %q; its categories: %s", name, strings.Join(names, ", "))
		}
	}
	return nil
}

func moderateJSONL(g *guard.Model, policy *guard.Policy, stdin io.Reader, stdout io.Writer) error {
	r := bufio.NewReaderSize(stdin, 64<<10)
	enc := json.NewEncoder(stdout)
	failed, flaggedLines := 0, 0
	line := 0
	var buf []byte
	for {
		b, tooLong, err := readJSONLLine(r, maxJSONLLine, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		buf = b[:0]
		line++
		text := bytes.TrimSpace(b)
		if len(text) == 0 && !tooLong {
			continue
		}
		var in struct {
			ID       json.RawMessage   `json:"id"`
			Messages []json.RawMessage `json:"messages"`
		}
		out := jsonlResult{Line: line}
		if tooLong {
			// Its own error, and the lines after it judged.
			out.Error = fmt.Sprintf("the line is longer than %d bytes", maxJSONLLine)
		} else if err := jsonkeys.Check(text, &jsonlKeys{}); err != nil {
			// Exact keys, each once: a "Messages" beside "messages" is
			// refused, not judged in its place.
			out.Error = "invalid JSON: " + err.Error()
		} else if err := json.Unmarshal(text, &in); err != nil {
			out.Error = "invalid JSON: " + err.Error()
		} else if msgs, skipped, err := jsonlMessages(in.Messages); err != nil {
			out.ID, out.Error = in.ID, err.Error()
		} else {
			out.ID, out.Skipped = in.ID, skipped
			res, err := g.Moderate(context.Background(), msgs, policy)
			if err != nil {
				out.Error = err.Error()
			}
			out.Result = res
		}
		if out.Error != "" {
			failed++
		} else if flagged(out.Result) {
			flaggedLines++
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d lines failed (see their \"error\" fields)", failed, line)
	}
	if flaggedLines > 0 {
		return errFlagged
	}
	return nil
}

// readJSONLLine reads the next line of r into buf (without its line end):
// at most max bytes of it; a longer line is read to its end and dropped,
// tooLong set, so that the lines after it are read as lines. io.EOF comes
// after the last line.
func readJSONLLine(r *bufio.Reader, max int, buf []byte) (line []byte, tooLong bool, err error) {
	buf = buf[:0]
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(bytes.TrimSuffix(chunk, []byte("\n"))) > max {
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			if len(buf) == 0 && !tooLong {
				return buf, false, io.EOF
			}
			return buf, tooLong, nil
		case err != nil:
			return buf, tooLong, err
		}
		return bytes.TrimSuffix(buf, []byte("\n")), tooLong, nil
	}
}

// writeResult prints a result as a table. debounce is the run length of
// the policy (0: the default). A Safe verdict that the policy does not count
// as non-safe is printed without a category, which means nothing there.
func writeResult(w io.Writer, res *guard.Result, debounce int) error {
	if debounce <= 0 {
		debounce = guard.DefaultDebounce
	}
	p := res.Prompt
	if p.Risk == "Safe" && !p.Flagged {
		fmt.Fprintf(w, "prompt: %s %.2f\n", p.Risk, p.RiskProb)
	} else {
		flag := ""
		if p.Flagged {
			flag = "  FLAGGED"
		}
		fmt.Fprintf(w, "prompt: %s %.2f (category %s %.2f)%s\n", p.Risk, p.RiskProb, p.Category, p.CategoryProb, flag)
	}
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
		cat, catP := "-", "-"
		if t.Risk != "Safe" || t.NonSafe {
			cat, catP = t.Category, fmt.Sprintf("%.2f", t.CategoryProb)
		}
		fmt.Fprintf(tw, "%d\t%q\t%s\t%.2f\t%s\t%s\t%s\n", t.Index, t.Text, t.Risk, t.RiskProb, cat, catP, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if res.FlaggedIndex >= 0 {
		t := res.Tokens[res.FlaggedIndex]
		fmt.Fprintf(w, "flagged at token %d %q (online rule: first run of %d non-safe tokens; %s, %s)\n", t.Index, t.Text, debounce, t.Level, t.Category)
	} else {
		fmt.Fprintf(w, "not flagged (online rule: no run of %d non-safe tokens)\n", debounce)
	}
	d := res.Decision
	switch {
	case d.Flagged && d.Level == "Mixed":
		fmt.Fprintf(w, "decision: %s (final rule: run of %d Unsafe and Controversial tokens ending at token %d, category %s; %d tokens judged)\n", d.Risk, debounce, d.Index, d.Category, d.Tokens)
	case d.Flagged:
		fmt.Fprintf(w, "decision: %s (final rule: first run of %d %s tokens, ending at token %d, category %s; %d tokens judged)\n", d.Risk, debounce, d.Level, d.Index, d.Category, d.Tokens)
	case d.Level != "":
		fmt.Fprintf(w, "decision: %s (final rule: loose mode ignores the run of %d %s tokens ending at token %d; %d tokens judged)\n", d.Risk, debounce, d.Level, d.Index, d.Tokens)
	default:
		fmt.Fprintf(w, "decision: %s (final rule: no run of %d non-safe tokens; %d tokens judged)\n", d.Risk, debounce, d.Tokens)
	}
	if d.Flagged && res.FlaggedIndex >= 0 && d.Index != res.FlaggedIndex {
		prefers := "a run of Unsafe tokens"
		if d.Level == "Controversial" {
			prefers = "a run of Controversial tokens"
		}
		fmt.Fprintf(w, "note: the final rule prefers %s to the earlier run that flagged the stream, so it names token %d, not %d\n", prefers, d.Index, res.FlaggedIndex)
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
