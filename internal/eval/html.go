package eval

import (
	"cmp"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/streamguard/streamguard/guard"
)

//go:embed report.html.tmpl
var reportTemplate string

// maxMisses bounds each task's list of worst misses in the HTML report.
const maxMisses = 12

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	// num is a full-precision number for data-value attributes.
	"num": func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) },
	"f4":  func(v float64) string { return fmt.Sprintf("%.4f", v) },
	"f2":  func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"f1":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
}).Parse(reportTemplate))

// htmlReport is what the template reads.
type htmlReport struct {
	*Report
	Tasks      []htmlTask
	Throughput *Throughput
}

type htmlTask struct {
	*TaskReport
	Modes     []htmlMode
	Confusion htmlConfusion
	Bars      []htmlBar // per category, in the report's mode
	BarsH     int
	Histogram []htmlBin
	HistMax   int
	Misses    []htmlMiss
	MissTotal int
}

type htmlMode struct {
	Name string
	Scores
}

type htmlConfusion struct {
	Predicted []string
	Rows      []htmlConfRow
}

type htmlConfRow struct {
	Gold  string
	Cells []htmlCell
}

type htmlCell struct {
	Gold, Predicted string
	N               int
	// Shade is the cell's share of its row (0..1), for the fill.
	Shade float64
	Match bool
}

// htmlBar is one category's three bars.
type htmlBar struct {
	CategoryScores
	Y                int
	PrecW, RecW, F1W float64
	DetW             float64
	LabelY           int
}

type htmlBin struct {
	Name   string
	N      int
	X, W   int
	H, Y   float64
	LabelY int
}

// htmlMiss is one gold-unsafe item the model let through.
type htmlMiss struct {
	Line  int
	ID    string
	Gold  string
	Level string
	// Category is the gold category.
	Category string
	Prompt   string
	// Peak is the largest risk over the response's tokens in the mode:
	// P(Unsafe) + P(Controversial) strict, P(Unsafe) loose (-1 for a
	// prompt miss: the prompt's probabilities are not kept).
	Peak     float64
	PeakName string
	Tokens   []htmlToken
}

type htmlToken struct {
	Index    int
	Text     string
	Level    string
	Category string
	NonSafe  float64
	Unsafe   float64
	InSpan   bool
}

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and SVG, no script, nothing fetched. items are the items the report was
// scored from, in the same order (their texts show the worst misses).
// Every number the page shows is also in a data-value attribute next to a
// data-metric name, for tests and scrapers.
func (r *Report) WriteHTML(w io.Writer, items []Item) error {
	if len(items) != len(r.PerItem) {
		return fmt.Errorf("eval: %d items for a report of %d", len(items), len(r.PerItem))
	}
	mode, err := guard.ParseMode(r.Mode)
	if err != nil {
		return err
	}
	hr := htmlReport{Report: r}
	if r.Throughput.Seconds > 0 {
		hr.Throughput = &r.Throughput
	}
	for _, t := range []*TaskReport{r.Prompt, r.Response} {
		if t == nil {
			continue
		}
		ht := htmlTask{TaskReport: t, Modes: []htmlMode{{"strict", t.Strict}, {"loose", t.Loose}}}
		ht.Confusion.Predicted = t.Confusion.Predicted
		for i, g := range t.Confusion.Gold {
			row := htmlConfRow{Gold: g}
			sum := 0
			for _, n := range t.Confusion.Counts[i] {
				sum += n
			}
			for j, n := range t.Confusion.Counts[i] {
				p := t.Confusion.Predicted[j]
				row.Cells = append(row.Cells, htmlCell{Gold: g, Predicted: p, N: n, Shade: ratio(n, sum), Match: p == g})
			}
			ht.Confusion.Rows = append(ht.Confusion.Rows, row)
		}
		for i, c := range t.Categories {
			const w = 300.0
			y := 8 + i*46
			ht.Bars = append(ht.Bars, htmlBar{CategoryScores: c, Y: y, LabelY: y + 10,
				PrecW: w * c.Precision, RecW: w * c.Recall, F1W: w * c.F1, DetW: w * c.DetectionRecall})
		}
		ht.BarsH = 16 + len(t.Categories)*46
		if p := t.Positions; p != nil {
			for _, n := range BinNames {
				ht.HistMax = max(ht.HistMax, p.Bins[n])
			}
			for i, n := range BinNames {
				h := 0.0
				if ht.HistMax > 0 {
					h = 120 * float64(p.Bins[n]) / float64(ht.HistMax)
				}
				ht.Histogram = append(ht.Histogram, htmlBin{Name: n, N: p.Bins[n], X: 10 + i*62, W: 50, H: h, Y: 140 - h, LabelY: 136 - int(h)})
			}
		}
		ht.Misses, ht.MissTotal = misses(t.Task, r.PerItem, items, mode)
		hr.Tasks = append(hr.Tasks, ht)
	}
	return reportTmpl.Execute(w, hr)
}

// misses lists the task's gold-positive items (in mode) that were not
// flagged, the most confidently missed first (lowest peak risk), at most
// maxMisses of them, and how many there were in all.
func misses(task string, res []ItemResult, items []Item, mode guard.Mode) ([]htmlMiss, int) {
	var out []htmlMiss
	for i := range res {
		ir, it := &res[i], &items[i]
		m := htmlMiss{Line: ir.Line, ID: strings.Trim(string(ir.ID), `"`), Prompt: lastUser(it)}
		switch task {
		case "prompt":
			if !positive(ir.PromptLabel, mode) || ir.Prompt.Flagged(mode) {
				continue
			}
			m.Gold, m.Level, m.Category = ir.PromptLabel, ir.Prompt.Level, it.PromptCategory
			m.Peak = -1
		default:
			if ir.Response == nil || !positive(ir.ResponseLabel, mode) || ir.Response.Flagged(mode) {
				continue
			}
			m.Gold, m.Level, m.Category = ir.ResponseLabel, ir.Response.Level, it.ResponseCategory
			m.PeakName = "P(Unsafe) + P(Controversial)"
			if mode == guard.Loose {
				m.PeakName = "P(Unsafe)"
			}
			for j, t := range ir.Judged {
				pos := ir.Response.ContentStart + j
				m.Tokens = append(m.Tokens, htmlToken{Index: j, Text: t.Text, Level: t.Level, Category: t.Category,
					NonSafe: float64(t.NonSafe), Unsafe: float64(t.Unsafe), InSpan: ir.SpanStart >= 0 && pos >= ir.SpanStart && pos <= ir.SpanEnd})
				risk := t.NonSafe
				if mode == guard.Loose {
					risk = t.Unsafe
				}
				m.Peak = max(m.Peak, float64(risk))
			}
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b htmlMiss) int { return cmp.Compare(a.Peak, b.Peak) })
	n := len(out)
	if len(out) > maxMisses {
		out = out[:maxMisses]
	}
	return out, n
}

// lastUser is the text of the item's last user turn.
func lastUser(it *Item) string {
	for i := len(it.Messages) - 1; i >= 0; i-- {
		if it.Messages[i].Role == "user" {
			return it.Messages[i].Content
		}
	}
	return ""
}
