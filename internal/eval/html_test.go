package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

const evil = `<script>alert(1)</script>`

// TestHTMLReport renders the shipped set's report on the tiny model and
// checks every number the page carries against the same run's JSON report,
// that it is self-contained, and that data strings are escaped.
func TestHTMLReport(t *testing.T) {
	m := tinyGuard(t)
	items := shippedItems(t)
	preds, err := Run(context.Background(), m, items, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := m.Info().Labels
	for _, mode := range []guard.Mode{guard.Strict, guard.Loose} {
		t.Run(mode.String(), func(t *testing.T) {
			rep, err := Score(items, preds, mode, labels.QueryCategory, labels.ResponseCategory)
			if err != nil {
				t.Fatal(err)
			}
			rep.Data, rep.Model, rep.Debounce = shippedSet, "tiny "+evil, 2
			rep.Throughput = Throughput{Items: 38, Tokens: 2052, Seconds: 0.4, TokensPerSecond: 5130, ItemsPerSecond: 95, LoadSeconds: 1.5}
			// A malicious category and texts: in the category table, a
			// missed prompt, and a missed response's token.
			shown := append([]Item(nil), items...)
			rep.Response.Categories[0].Category = evil
			for i := range shown {
				msgs := append(shown[i].Messages[:0:0], shown[i].Messages...)
				for j := range msgs {
					if msgs[j].Role == "user" {
						msgs[j].Content = evil + " " + msgs[j].Content
					}
				}
				shown[i].Messages = msgs
				if j := rep.PerItem[i].Judged; len(j) > 0 {
					j = append([]TokenRisk(nil), j...)
					j[0].Text = evil
					rep.PerItem[i].Judged = j
				}
			}
			var page bytes.Buffer
			if err := rep.WriteHTML(&page, shown); err != nil {
				t.Fatal(err)
			}
			html := page.String()
			if os.Getenv("EVAL_HTML_OUT") != "" {
				os.WriteFile(fmt.Sprintf("%s-%s.html", os.Getenv("EVAL_HTML_OUT"), mode), page.Bytes(), 0o644)
			}
			// The JSON report of the run, decoded as a client would.
			js, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatal(err)
			}
			metrics := map[string]string{}
			for _, mm := range regexp.MustCompile(`data-metric="([^"]+)" data-value="([^"]*)"`).FindAllStringSubmatch(html, -1) {
				if _, dup := metrics[mm[1]]; dup && !strings.HasSuffix(mm[1], ".items") {
					t.Errorf("metric %s twice", mm[1])
				}
				metrics[mm[1]] = mm[2]
			}
			want := map[string]float64{"debounce": float64(back.Debounce)}
			tasks := 0
			for _, tr := range []*TaskReport{back.Prompt, back.Response} {
				if tr == nil {
					continue
				}
				tasks++
				want[tr.Task+".items"] = float64(tr.Items)
				for name, s := range map[string]Scores{"strict": tr.Strict, "loose": tr.Loose} {
					p := tr.Task + "." + name + "."
					want[p+"precision"], want[p+"recall"], want[p+"f1"] = s.Precision, s.Recall, s.F1
					want[p+"tp"], want[p+"fp"], want[p+"fn"], want[p+"tn"] = float64(s.TP), float64(s.FP), float64(s.FN), float64(s.TN)
				}
				for i, g := range tr.Confusion.Gold {
					for j, pr := range tr.Confusion.Predicted {
						want[tr.Task+".confusion."+g+"."+pr] = float64(tr.Confusion.Counts[i][j])
					}
				}
				if ps := tr.Positions; ps != nil {
					want[tr.Task+".positions.items"] = float64(ps.Items)
					want[tr.Task+".positions.hit_rate"], want[tr.Task+".positions.within_128_rate"] = ps.HitRate, ps.Within128Rate
					for _, b := range BinNames {
						re := regexp.MustCompile(`data-bin="` + regexp.QuoteMeta(template_escape(b)) + `" data-value="(\d+)"`)
						mm := re.FindStringSubmatch(html)
						if mm == nil || mm[1] != strconv.Itoa(ps.Bins[b]) {
							t.Errorf("bin %s: %v, want %d", b, mm, ps.Bins[b])
						}
					}
				}
				// Misses: every gold-positive item not flagged in the mode.
				miss := 0
				for _, ir := range back.PerItem {
					switch tr.Task {
					case "prompt":
						if positive(ir.PromptLabel, mode) && !ir.PromptFlagged {
							miss++
						}
					default:
						if ir.ResponseFlagged != nil && positive(ir.ResponseLabel, mode) && !*ir.ResponseFlagged {
							miss++
						}
					}
				}
				want[tr.Task+".misses"] = float64(miss)
				if got := strings.Count(html, `data-miss="`+tr.Task+`"`); got != min(miss, maxMisses) {
					t.Errorf("%s: %d misses shown, want %d", tr.Task, got, min(miss, maxMisses))
				}
				for _, c := range tr.Categories {
					cat := template_escape(c.Category)
					re := regexp.MustCompile(`data-task="` + tr.Task + `" data-category="` + regexp.QuoteMeta(cat) + `" data-support="(\d+)" data-precision="([^"]+)" data-recall="([^"]+)" data-f1="([^"]+)" data-detected="(\d+)"`)
					mm := re.FindStringSubmatch(html)
					if mm == nil {
						t.Errorf("no bars for category %q", c.Category)
						continue
					}
					for k, v := range []float64{float64(c.Support), c.Precision, c.Recall, c.F1, float64(c.Detected)} {
						if f, _ := strconv.ParseFloat(mm[k+1], 64); f != v {
							t.Errorf("category %q field %d: %s, want %v", c.Category, k, mm[k+1], v)
						}
					}
				}
			}
			if tasks != 2 {
				t.Fatalf("%d tasks", tasks)
			}
			tp := back.Throughput
			want["throughput.items"], want["throughput.tokens"], want["throughput.seconds"] = float64(tp.Items), float64(tp.Tokens), tp.Seconds
			want["throughput.tokens_per_second"], want["throughput.items_per_second"] = tp.TokensPerSecond, tp.ItemsPerSecond
			for k, v := range want {
				s, ok := metrics[k]
				if !ok {
					t.Errorf("no metric %s", k)
					continue
				}
				if f, err := strconv.ParseFloat(s, 64); err != nil || f != v {
					t.Errorf("metric %s = %q, JSON report %v", k, s, v)
				}
			}
			if metrics["mode"] != mode.String() {
				t.Errorf("mode %q", metrics["mode"])
			}
			if len(metrics) != len(want)+1 {
				t.Errorf("%d metrics on the page, %d checked", len(metrics), len(want)+1)
			}
			// Self-contained and escaped.
			low := strings.ToLower(html)
			for _, bad := range []string{"<script", "http://", "https://", "@import", "url(", "<link", "<img", "<iframe"} {
				if strings.Contains(low, bad) {
					t.Errorf("page contains %q", bad)
				}
			}
			esc := "&lt;script&gt;alert(1)&lt;/script&gt;"
			if n := strings.Count(html, esc); n < 3 {
				t.Errorf("escaped payload appears %d times", n)
			}
			if mode == guard.Loose && !strings.Contains(html, `data-level="`) {
				t.Error("no highlighted token in the loose report's response misses")
			}
		})
	}
}

// template_escape is how html/template writes s in an attribute.
func template_escape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;", "+", "&#43;")
	return r.Replace(s)
}
