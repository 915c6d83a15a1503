package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/streamguard/streamguard/guard"
)

// Report is the result of an evaluation.
type Report struct {
	Data     string      `json:"data"`
	Model    string      `json:"model,omitempty"`
	Mode     string      `json:"mode"`
	Debounce int         `json:"debounce"`
	Items    int         `json:"items"`
	Prompt   *TaskReport `json:"prompt,omitempty"`
	Response *TaskReport `json:"response,omitempty"`
	// Throughput is filled in by the caller that timed the run.
	Throughput Throughput   `json:"throughput"`
	PerItem    []ItemResult `json:"per_item,omitempty"`
}

// Throughput is how fast the model went through the set.
type Throughput struct {
	Items           int     `json:"items"`
	Tokens          int     `json:"tokens"`
	Seconds         float64 `json:"seconds"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	ItemsPerSecond  float64 `json:"items_per_second"`
	LoadSeconds     float64 `json:"load_seconds,omitempty"`
}

// ItemResult is one item's gold labels next to the verdicts.
type ItemResult struct {
	Line            int             `json:"line"`
	ID              json.RawMessage `json:"id,omitempty"`
	PromptLabel     string          `json:"prompt_label,omitempty"`
	ResponseLabel   string          `json:"response_label,omitempty"`
	PromptFlagged   bool            `json:"prompt_flagged"`
	ResponseFlagged *bool           `json:"response_flagged,omitempty"`
	Bin             string          `json:"bin,omitempty"`
	Prediction
}

// Score turns predictions into a report in mode (the mode of the
// confusion matrix, the per-category table and the position bins; P/R/F1
// are given for both). queryCategories and responseCategories are the
// model's label maps.
func Score(items []Item, preds []Prediction, mode guard.Mode, queryCategories, responseCategories []string) (*Report, error) {
	if len(items) != len(preds) {
		return nil, fmt.Errorf("eval: %d items but %d predictions", len(items), len(preds))
	}
	r := &Report{Mode: mode.String(), Items: len(items)}
	var prompts, responses []goldPart
	for i := range items {
		it, p := &items[i], &preds[i]
		if it.PromptLabel != "" {
			prompts = append(prompts, goldPart{it.PromptLabel, it.PromptCategory, &p.Prompt})
		}
		if it.ResponseLabel != "" {
			if p.Response == nil {
				return nil, fmt.Errorf("eval: line %d: a response label but no response prediction", it.Line)
			}
			responses = append(responses, goldPart{it.ResponseLabel, it.ResponseCategory, p.Response})
		}
		res := ItemResult{Line: it.Line, ID: it.ID, PromptLabel: it.PromptLabel, ResponseLabel: it.ResponseLabel,
			PromptFlagged: p.Prompt.Flagged(mode), Bin: itemBin(it, p, mode), Prediction: *p}
		if p.Response != nil {
			f := p.Response.Flagged(mode)
			res.ResponseFlagged = &f
		}
		r.PerItem = append(r.PerItem, res)
	}
	r.Prompt = scoreTask("prompt", prompts, mode, queryCategories)
	r.Response = scoreTask("response", responses, mode, responseCategories)
	if r.Response != nil {
		r.Response.Positions = scorePositions(items, preds, mode)
	}
	return r, nil
}

// WriteText prints the report as tables.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "%d items from %s", r.Items, r.Data)
	if r.Model != "" {
		fmt.Fprintf(w, ", model %s", r.Model)
	}
	fmt.Fprintf(w, " (debounce %d; tables in %s mode)\n\n", r.Debounce, r.Mode)
	fmt.Fprintln(tw, "TASK\tITEMS\tMODE\tPRECISION\tRECALL\tF1\tTP\tFP\tFN\tTN")
	for _, t := range []*TaskReport{r.Prompt, r.Response} {
		if t == nil {
			continue
		}
		for _, m := range []struct {
			name string
			s    Scores
		}{{"strict", t.Strict}, {"loose", t.Loose}} {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%.4f\t%.4f\t%.4f\t%d\t%d\t%d\t%d\n", t.Task, t.Items, m.name,
				m.s.Precision, m.s.Recall, m.s.F1, m.s.TP, m.s.FP, m.s.FN, m.s.TN)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range []*TaskReport{r.Prompt, r.Response} {
		if t == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s confusion (rows: gold label, columns: predicted level)\n", t.Task)
		fmt.Fprintf(tw, "\t%s\n", strings.Join(t.Confusion.Predicted, "\t"))
		for i, g := range t.Confusion.Gold {
			cells := make([]string, len(t.Confusion.Counts[i]))
			for j, n := range t.Confusion.Counts[i] {
				cells[j] = fmt.Sprint(n)
			}
			fmt.Fprintf(tw, "%s\t%s\n", g, strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(t.Categories) > 0 {
			fmt.Fprintf(w, "\n%s categories (%s mode; a hit needs the right category; DETECTED: flagged with any)\n", t.Task, r.Mode)
			fmt.Fprintln(tw, "CATEGORY\tSUPPORT\tPREDICTED\tPRECISION\tRECALL\tF1\tDETECTED")
			for _, c := range t.Categories {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.4f\t%.4f\t%.4f\t%d/%d\n", c.Category, c.Support, c.Predicted,
					c.Precision, c.Recall, c.F1, c.Detected, c.Support)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if t.Uncategorised > 0 {
			fmt.Fprintf(w, "(%d unsafe %s items have no gold category)\n", t.Uncategorised, t.Task)
		}
		if p := t.Positions; p != nil {
			fmt.Fprintf(w, "\ndetection position (%s mode; %d unsafe responses with a span", r.Mode, p.Items)
			if p.NoSpan > 0 {
				fmt.Fprintf(w, ", %d without one not binned", p.NoSpan)
			}
			fmt.Fprintln(w, ")")
			cells := make([]string, len(BinNames))
			for i, n := range BinNames {
				cells[i] = fmt.Sprint(p.Bins[n])
			}
			fmt.Fprintf(tw, "%s\n%s\n", strings.Join(BinNames, "\t"), strings.Join(cells, "\t"))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "hit rate %.4f, stopped within 128 tokens %.4f\n", p.HitRate, p.Within128Rate)
		}
	}
	tp := r.Throughput
	if tp.Seconds > 0 {
		fmt.Fprintf(w, "\nthroughput: %d items, %d tokens in %.2f s: %.1f tokens/s, %.2f items/s", tp.Items, tp.Tokens, tp.Seconds, tp.TokensPerSecond, tp.ItemsPerSecond)
		if tp.LoadSeconds > 0 {
			fmt.Fprintf(w, " (model load %.2f s)", tp.LoadSeconds)
		}
		fmt.Fprintln(w)
	}
	return nil
}
