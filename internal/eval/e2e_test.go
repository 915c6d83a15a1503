package eval

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/synth"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

const shippedSet = "../../testdata/eval/synthetic.jsonl"

// tinyDir holds the synthetic model; TestMain removes it.
var tinyDir string

var tinyOnce = sync.OnceValues(func() (*guard.Model, error) {
	if _, err := synth.Generate(tinyDir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		return nil, err
	}
	m, err := guard.Load(context.Background(), tinyDir, guard.Options{})
	tinyLoaded = m
	return m, err
})

// tinyLoaded is the model once loaded, for TestMain to close.
var tinyLoaded *guard.Model

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eval-tiny-")
	if err != nil {
		panic(err)
	}
	tinyDir = dir
	code := m.Run()
	if tinyLoaded != nil {
		tinyLoaded.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// tinyGuard is `gen-model --preset tiny --dtype bf16 --seed 1` loaded.
func tinyGuard(t *testing.T) *guard.Model {
	t.Helper()
	m, err := tinyOnce()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func shippedItems(t *testing.T) []Item {
	t.Helper()
	f, err := os.Open(shippedSet)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	items, err := ReadItems(f, shippedSet)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func itemByID(t *testing.T, items []Item, id string) int {
	for i, it := range items {
		if string(it.ID) == `"`+id+`"` {
			return i
		}
	}
	t.Fatalf("no item %s", id)
	return -1
}

// TestShippedSetEndToEnd runs the shipped set on a synthetic model: the
// batched run must agree with guard.Moderate item by item, and the report
// must account for every item.
func TestShippedSetEndToEnd(t *testing.T) {
	m := tinyGuard(t)
	items := shippedItems(t)
	if len(items) != 38 {
		t.Fatalf("%d items, want 38", len(items))
	}
	labels := m.Info().Labels
	if err := CheckCategories(items, shippedSet, labels.QueryCategory, labels.ResponseCategory); err != nil {
		t.Fatal(err)
	}
	var bar bytes.Buffer
	preds, err := Run(context.Background(), m, items, RunOptions{Batch: 8, Progress: &bar})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bar.String(), "38/38 items [========================] 100%") {
		t.Errorf("progress %q", bar.String())
	}
	// Grouping does not change verdicts (a subset: the race detector makes
	// every forward slow).
	sub := append(append([]Item(nil), items[:4]...), items[28:34]...)
	one, err := Run(context.Background(), m, sub, RunOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(append(append([]Prediction(nil), preds[:4]...), preds[28:34]...), one) {
		t.Fatal("batch 8 and batch 3 disagree")
	}
	strict := guard.Policy{Mode: guard.Strict}
	for i, it := range items {
		res, err := m.Moderate(context.Background(), guardhook.Messages[guard.Message](it.Messages), &strict)
		if err != nil {
			t.Fatalf("line %d: %v", it.Line, err)
		}
		p := preds[i]
		if p.Prompt.Level != res.Prompt.Risk || p.Prompt.Position != res.Prompt.Position {
			t.Errorf("line %d: prompt %+v, Moderate %s at %d", it.Line, p.Prompt, res.Prompt.Risk, res.Prompt.Position)
		}
		if !it.HasResponse() {
			if p.Response != nil || p.Tokens != res.Prompt.Position+1 {
				t.Errorf("line %d: prompt-only item with %+v, %d tokens", it.Line, p.Response, p.Tokens)
			}
			continue
		}
		d, r := res.Decision, p.Response
		wantLevel, wantPos := d.Level, -1
		if d.Level == "" {
			wantLevel = Safe
		} else {
			wantPos = res.Tokens[d.Index].Position
		}
		if r.Level != wantLevel || r.Index != d.Index || r.Position != wantPos || r.Tokens != d.Tokens || r.ContentStart != res.Tokens[0].Position {
			t.Errorf("line %d: response %+v, Moderate decision %+v at %d", it.Line, r, d, wantPos)
		}
		if last := res.Tokens[len(res.Tokens)-1].Position; p.Tokens != last+3 { // + <|im_end|> "\n"
			t.Errorf("line %d: %d tokens, last judged at %d", it.Line, p.Tokens, last)
		}
		if it.HasSpan() && (p.SpanStart < r.ContentStart || p.SpanEnd >= r.ContentStart+r.Tokens || p.SpanEnd < p.SpanStart) {
			t.Errorf("line %d: span [%d, %d] outside the response [%d, %d)", it.Line, p.SpanStart, p.SpanEnd, r.ContentStart, r.ContentStart+r.Tokens)
		}
	}
	// u10's written token positions are where its passage lies.
	u10 := itemByID(t, items, "u10")
	ids := make([]int, 0)
	chat, _ := guardhook.Tokenizer(m).RenderChat(items[u10].Messages)
	start := preds[u10].Response.ContentStart
	ids = append(ids, chat.IDs[start:start+preds[u10].Response.Tokens]...)
	a, b, err := locateSpan(guardhook.Tokenizer(m), ids, start, "wait until he is asleep and break his fingers so he learns to respect you")
	if err != nil || a != 34 || b != 48 || preds[u10].SpanStart != 34 || preds[u10].SpanEnd != 48 {
		t.Errorf("u10 span: located [%d, %d] (%v), item [%d, %d], want [34, 48]", a, b, err, preds[u10].SpanStart, preds[u10].SpanEnd)
	}

	rep, err := Score(items, preds, guard.Strict, labels.QueryCategory, labels.ResponseCategory)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Prompt.Items != 37 || rep.Response.Items != 24 {
		t.Errorf("prompt %d, response %d items; want 37 and 24", rep.Prompt.Items, rep.Response.Items)
	}
	for _, tr := range []*TaskReport{rep.Prompt, rep.Response} {
		for _, s := range []Scores{tr.Strict, tr.Loose} {
			if s.TP+s.FP+s.FN+s.TN != tr.Items {
				t.Errorf("%s: %+v does not add up to %d", tr.Task, s.Counts, tr.Items)
			}
		}
		n := 0
		for _, row := range tr.Confusion.Counts {
			for _, c := range row {
				n += c
			}
		}
		if n != tr.Items {
			t.Errorf("%s confusion sums to %d", tr.Task, n)
		}
	}
	ps := rep.Response.Positions
	binned := 0
	for _, c := range ps.Bins {
		binned += c
	}
	if ps.Items != 10 || binned != 10 || ps.NoSpan != 0 {
		t.Errorf("positions %+v, want the 10 unsafe responses binned", ps)
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"prompt    37     strict", "response  24     loose", "detection position (strict mode; 10 unsafe responses with a span)", "ahead  hit  1-32"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestLocateSpanMultibyte(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	text := "Le café était fermé; à Tokyo 東京タワー is tall 🗼 and bright."
	ids := tok.Encode(text)
	for _, passage := range []string{"東京タワー", "café", "🗼", "Le", "bright.", "é"} {
		a, b, err := locateSpan(tok, ids, 100, passage)
		if err != nil {
			t.Fatalf("%q: %v", passage, err)
		}
		a, b = a-100, b-100
		got := tok.Decode(ids[a:b+1], false)
		if !strings.Contains(got, passage) {
			t.Errorf("%q: tokens %d..%d decode to %q", passage, a, b, got)
		}
		// Minimal: dropping either end token loses part of the passage.
		if a < b && (strings.Contains(tok.Decode(ids[a+1:b+1], false), passage) || strings.Contains(tok.Decode(ids[a:b], false), passage)) {
			t.Errorf("%q: span %d..%d is not minimal", passage, a, b)
		}
	}
	if _, _, err := locateSpan(tok, ids, 0, "absent"); err == nil {
		t.Error("absent passage located")
	}
}

// An unsafe span given as token positions must lie within the response: one
// outside it (indexes relative to the response, or from another template)
// was binned as if real, e.g. "ahead" for a flag after the whole span.
func TestSpanOutsideResponseRefused(t *testing.T) {
	m := tinyGuard(t)
	line := `{"prompt": "hello", "response": "some words of an answer", "response_label": "Unsafe", "unsafe_start_index": 5000, "unsafe_end_index": 5001}`
	items, err := ReadItems(strings.NewReader(line+"\n"), "d.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	preds, err := Run(context.Background(), m, items, RunOptions{})
	if err == nil {
		r := preds[0].Response
		t.Errorf("span [5000, 5001] accepted for a response at positions [%d, %d); bin %q",
			r.ContentStart, r.ContentStart+r.Tokens, itemBin(&items[0], &preds[0], guard.Strict))
	} else if !strings.Contains(err.Error(), "not within the response") {
		t.Errorf("error %v, want the span refused", err)
	}
}
