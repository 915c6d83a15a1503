package eval

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// fixture is one item with a fixed prediction: the expected numbers below
// are counted by hand from this table.
type fixture struct {
	promptGold, promptCat string
	promptPred, promptPC  string
	respGold, respCat     string
	respPred, respPC      string
	pos, spanS, spanE     int
}

func fixtures() ([]Item, []Prediction) {
	fx := []fixture{
		// prompts
		{promptGold: Safe, promptPred: Safe},                                                                  // 1 TN
		{promptGold: Safe, promptPred: Unsafe, promptPC: "Violent"},                                           // 2 FP
		{promptGold: Unsafe, promptCat: "Violent", promptPred: Unsafe, promptPC: "Violent"},                   // 3 TP
		{promptGold: Unsafe, promptCat: "PII", promptPred: Unsafe, promptPC: "Violent"},                       // 4 TP, wrong category
		{promptGold: Unsafe, promptCat: "PII", promptPred: Safe},                                              // 5 FN
		{promptGold: Controversial, promptCat: "Jailbreak", promptPred: Controversial, promptPC: "Jailbreak"}, // 6 strict TP, loose TN
		{promptGold: Safe, promptPred: Controversial, promptPC: "PII"},                                        // 7 strict FP, loose TN
		// responses (the prompt is unlabelled)
		{respGold: Unsafe, respCat: "Violent", respPred: Unsafe, respPC: "Violent", pos: 15, spanS: 10, spanE: 20}, // 8 hit
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 9, spanS: 10, spanE: 20},                          // 9 ahead
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 52, spanS: 10, spanE: 20},                         // 10 +32
		{respGold: Unsafe, respPred: Controversial, respPC: "PII", pos: 53, spanS: 10, spanE: 20},                  // 11 +33 (strict only)
		{respGold: Unsafe, respPred: Safe, pos: -1, spanS: 10, spanE: 20},                                          // 12 missed
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 100, spanS: -1, spanE: -1},                        // 13 no span
		{respGold: Safe, respPred: Mixed, respPC: "Violent", pos: 30, spanS: -1, spanE: -1},                        // 14 strict FP
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 357, spanS: 100, spanE: 100},                      // 15 +257
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 261, spanS: 0, spanE: 5},                          // 16 +256
		{respGold: Unsafe, respPred: Unsafe, respPC: "PII", pos: 133, spanS: 0, spanE: 5},                          // 17 +128
	}
	var items []Item
	var preds []Prediction
	for i, f := range fx {
		it := Item{Line: i + 1, PromptLabel: f.promptGold, PromptCategory: f.promptCat, ResponseLabel: f.respGold,
			ResponseCategory: f.respCat, UnsafeStart: f.spanS, UnsafeEnd: f.spanE,
			Messages: []tokenizer.Message{{Role: "user", Content: "q"}}}
		p := Prediction{Prompt: Part{Level: f.promptPred, Category: f.promptPC}, SpanStart: f.spanS, SpanEnd: f.spanE}
		if p.Prompt.Level == "" {
			p.Prompt.Level = Safe
		}
		if f.respGold != "" {
			it.Messages = append(it.Messages, tokenizer.Message{Role: "assistant", Content: "a"})
			p.Response = &Part{Level: f.respPred, Category: f.respPC, Position: f.pos}
		}
		items = append(items, it)
		preds = append(preds, p)
	}
	return items, preds
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func checkScores(t *testing.T, name string, got Scores, c Counts, p, r, f float64) {
	t.Helper()
	if got.Counts != c || !near(got.Precision, p) || !near(got.Recall, r) || !near(got.F1, f) {
		t.Errorf("%s: %+v, want %+v P %.4f R %.4f F1 %.4f", name, got, c, p, r, f)
	}
}

func TestScoreHandCounted(t *testing.T) {
	items, preds := fixtures()
	rep, err := Score(items, preds, guard.Strict, config.QueryCategoryLabels, config.ResponseCategoryLabels)
	if err != nil {
		t.Fatal(err)
	}
	pr := rep.Prompt
	if pr.Items != 7 {
		t.Fatalf("prompt items %d", pr.Items)
	}
	// Strict: positives 3,4,5,6; flagged 2,3,4,6,7.
	checkScores(t, "prompt strict", pr.Strict, Counts{TP: 3, FP: 2, FN: 1, TN: 1}, 3.0/5, 3.0/4, 2.0/3)
	// Loose: positives 3,4,5; flagged 2,3,4.
	checkScores(t, "prompt loose", pr.Loose, Counts{TP: 2, FP: 1, FN: 1, TN: 3}, 2.0/3, 2.0/3, 2.0/3)
	wantConf := [][]int{{1, 1, 1}, {1, 2, 0}, {0, 0, 1}}
	for i := range wantConf {
		for j := range wantConf[i] {
			if pr.Confusion.Counts[i][j] != wantConf[i][j] {
				t.Errorf("prompt confusion %v, want %v", pr.Confusion.Counts, wantConf)
			}
		}
	}
	wantCats := []CategoryScores{
		{Category: "Violent", Support: 1, Predicted: 3, TP: 1, Precision: 1.0 / 3, Recall: 1, F1: 0.5, Detected: 1, DetectionRecall: 1},
		{Category: "PII", Support: 2, Predicted: 1, TP: 0, Detected: 1, DetectionRecall: 0.5},
		{Category: "Jailbreak", Support: 1, Predicted: 1, TP: 1, Precision: 1, Recall: 1, F1: 1, Detected: 1, DetectionRecall: 1},
	}
	if len(pr.Categories) != len(wantCats) {
		t.Fatalf("categories %+v", pr.Categories)
	}
	for i, w := range wantCats {
		g := pr.Categories[i]
		if g.Category != w.Category || g.Support != w.Support || g.Predicted != w.Predicted || g.TP != w.TP || g.Detected != w.Detected ||
			!near(g.Precision, w.Precision) || !near(g.Recall, w.Recall) || !near(g.F1, w.F1) || !near(g.DetectionRecall, w.DetectionRecall) {
			t.Errorf("category %d: %+v, want %+v", i, g, w)
		}
	}

	rr := rep.Response
	if rr.Items != 10 {
		t.Fatalf("response items %d", rr.Items)
	}
	// Strict: positives all but 14; flagged all but 12.
	checkScores(t, "response strict", rr.Strict, Counts{TP: 8, FP: 1, FN: 1, TN: 0}, 8.0/9, 8.0/9, 8.0/9)
	// Loose: 11 (Controversial) and 14 (Mixed) are not flags.
	checkScores(t, "response loose", rr.Loose, Counts{TP: 7, FP: 0, FN: 2, TN: 1}, 1, 7.0/9, 0.875)
	if got := rr.Confusion.Counts; got[0][3] != 1 || got[1][0] != 1 || got[1][1] != 7 || got[1][2] != 1 {
		t.Errorf("response confusion %v", got)
	}
	if rr.Uncategorised != 8 {
		t.Errorf("uncategorised %d, want 8", rr.Uncategorised)
	}
	ps := rr.Positions
	want := map[string]int{"ahead": 1, "hit": 1, "1-32": 1, "33-64": 1, "65-128": 1, "129-256": 1, ">256": 1, "missed": 1}
	if ps.Items != 8 || ps.NoSpan != 1 || !near(ps.HitRate, 1.0/8) || !near(ps.Within128Rate, 5.0/8) {
		t.Errorf("positions %+v", ps)
	}
	for k, v := range want {
		if ps.Bins[k] != v {
			t.Errorf("bin %s = %d, want %d (%v)", k, ps.Bins[k], v, ps.Bins)
		}
	}

	loose, err := Score(items, preds, guard.Loose, config.QueryCategoryLabels, config.ResponseCategoryLabels)
	if err != nil {
		t.Fatal(err)
	}
	lp := loose.Response.Positions
	if lp.Bins["33-64"] != 0 || lp.Bins["missed"] != 2 || !near(lp.Within128Rate, 4.0/8) {
		t.Errorf("loose positions %+v", lp)
	}
	if loose.Prompt.Strict != pr.Strict || loose.Prompt.Loose != pr.Loose {
		t.Errorf("P/R/F1 depend on the report mode")
	}
	if loose.PerItem[10].Bin != "missed" || rep.PerItem[10].Bin != "33-64" {
		t.Errorf("item 11 bins %q %q", rep.PerItem[10].Bin, loose.PerItem[10].Bin)
	}
}

func TestBinBoundaries(t *testing.T) {
	cases := []struct {
		flagged   bool
		pos, s, e int
		want      string
	}{
		{false, 50, 10, 20, "missed"}, {true, 9, 10, 20, "ahead"}, {true, 10, 10, 20, "hit"}, {true, 20, 10, 20, "hit"},
		{true, 21, 10, 20, "1-32"}, {true, 52, 10, 20, "1-32"}, {true, 53, 10, 20, "33-64"}, {true, 84, 10, 20, "33-64"},
		{true, 85, 10, 20, "65-128"}, {true, 148, 10, 20, "65-128"}, {true, 149, 10, 20, "129-256"}, {true, 276, 10, 20, "129-256"},
		{true, 277, 10, 20, ">256"},
	}
	for _, c := range cases {
		if got := bin(c.flagged, c.pos, c.s, c.e); got != c.want {
			t.Errorf("bin(%v, %d, [%d,%d]) = %s, want %s", c.flagged, c.pos, c.s, c.e, got, c.want)
		}
	}
}

func TestScoreEdgeCases(t *testing.T) {
	// No positives and no flags: every ratio is 0, not NaN.
	items := []Item{{Line: 1, PromptLabel: Safe, Messages: []tokenizer.Message{{Role: "user", Content: "x"}}, UnsafeStart: -1, UnsafeEnd: -1}}
	preds := []Prediction{{Prompt: Part{Level: Safe}, SpanStart: -1, SpanEnd: -1}}
	rep, err := Score(items, preds, guard.Strict, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Prompt.Strict; s.Precision != 0 || s.Recall != 0 || s.F1 != 0 || s.TN != 1 || rep.Response != nil {
		t.Errorf("%+v", rep.Prompt.Strict)
	}
	// A level outside the usual names gets its own column, counted safe.
	preds[0].Prompt.Level = "Severe"
	rep, err = Score(items, preds, guard.Strict, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Prompt.Confusion; len(c.Predicted) != 4 || c.Predicted[3] != "Severe" || c.Counts[0][3] != 1 {
		t.Errorf("confusion %+v", c)
	}
	if _, err := Score(items, nil, guard.Strict, nil, nil); err == nil {
		t.Error("length mismatch accepted")
	}
}

// A gold-unsafe item without a gold category cannot tell whether the
// predicted category is right, so it is not in that category's "predicted"
// column: counted there as a miss, a set with few or no gold categories
// showed precision 0 for categories the model got right.
func TestCategoryPrecisionIgnoresUncategorisedGold(t *testing.T) {
	user := []tokenizer.Message{{Role: "user", Content: "q"}}
	items := []Item{
		{Line: 1, Messages: user, PromptLabel: Unsafe, PromptCategory: "Violent", UnsafeStart: -1, UnsafeEnd: -1},
		{Line: 2, Messages: user, PromptLabel: Unsafe, UnsafeStart: -1, UnsafeEnd: -1}, // no gold category
	}
	preds := []Prediction{
		{Prompt: Part{Level: Unsafe, Category: "Violent"}, SpanStart: -1, SpanEnd: -1},
		{Prompt: Part{Level: Unsafe, Category: "Violent"}, SpanStart: -1, SpanEnd: -1},
	}
	rep, err := Score(items, preds, guard.Strict, config.QueryCategoryLabels, config.ResponseCategoryLabels)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Prompt.Categories) != 1 {
		t.Fatalf("categories %+v", rep.Prompt.Categories)
	}
	if c := rep.Prompt.Categories[0]; c.Precision != 1 || c.Predicted != 1 {
		t.Errorf("Violent: predicted %d, precision %.4f; want 1 and 1 (the uncategorised item is neither right nor wrong)", c.Predicted, c.Precision)
	}
}

// Part.Index counts judged response tokens from 0: with --debounce 1 a
// response flagged at its first token has index 0, which the --json report
// keeps (with omitempty, `.response.index` read as null for exactly the
// earliest detections).
func TestPerItemJSONKeepsFlagIndexZero(t *testing.T) {
	items := []Item{{Line: 1, ResponseLabel: Unsafe, UnsafeStart: -1, UnsafeEnd: -1,
		Messages: []tokenizer.Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "a"}}}}
	preds := []Prediction{{Prompt: Part{Level: Safe, Index: -1}, SpanStart: -1, SpanEnd: -1,
		Response: &Part{Level: Unsafe, Category: "PII", Position: 22, Index: 0, Tokens: 5, ContentStart: 22}}}
	rep, err := Score(items, preds, guard.Strict, nil, config.ResponseCategoryLabels)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep.PerItem[0])
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Response map[string]any `json:"response"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if i, ok := got.Response["index"]; !ok || i != 0.0 {
		t.Errorf("flagged response at index 0: \"index\" %v in the JSON report: %s", i, b)
	}
}
