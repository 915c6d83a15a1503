package train

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

var twelve = []string{"Weapons", "Fraud", "Malware", "Harassment", "Self-Harm", "Drugs",
	"Extremism", "Privacy", "Gambling", "Medical Advice", "Legal Advice", "Financial Advice"}

// TestTwelveCategoriesEndToEnd trains heads with 12 custom categories on
// both paths of an INT4 (AWQ) backbone, then checks that the written
// folder passes the strict load report, that config.json carries the new
// taxonomy, and that guard.Moderate on the written model gives, at every
// labelled validation position, exactly the verdict (risk and category
// index) of the trainer's own evaluation. Retraining the written model
// reuses the cached features (the key ignores the heads) and hard-links
// its backbone.
func TestTwelveCategoriesEndToEnd(t *testing.T) {
	dir := tinyModel(t, "awq")
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRNG(21, "e2e conversations")
	var convMsgs [][]tokenizer.Message
	for i := range 900 {
		resp := 0
		if i%3 == 0 {
			resp = 3 + r.intn(6)
		}
		convMsgs = append(convMsgs, randomConversation(r, 1+r.intn(4), resp, i%7 == 0))
	}
	c := newCorpus(t, m, convMsgs)
	tax := Taxonomy{Risk: []string{"Safe", "Unsafe", "Controversial"}, Categories: twelve}
	lines, _ := c.plant(t, plantRules(22, c.H, tax, c.byPath(), 0.8), tax)
	m.Close()
	tmp := t.TempDir()
	split := len(lines) * 3 / 4
	trainPath, valPath := filepath.Join(tmp, "train.jsonl"), filepath.Join(tmp, "val.jsonl")
	writeLines(t, trainPath, lines[:split])
	writeLines(t, valPath, lines[split:])

	out := filepath.Join(tmp, "out")
	cache := filepath.Join(tmp, "cache")
	o := DefaultOptions()
	o.Model, o.Data, o.Val, o.Out, o.CacheDir = dir, trainPath, valPath, out, cache
	o.Categories, o.Epochs, o.Patience, o.LR = twelve, 8, 0, 3e-3
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Features {
		if f.Cache != "miss" || f.Tokens == 0 {
			t.Errorf("first run, features of %s: cache %s, %d tokens; want extracted and stored", f.File, f.Cache, f.Tokens)
		}
	}

	r0, err := checkpoint.Report(out)
	if err != nil {
		t.Fatal(err)
	}
	if !r0.OK() {
		t.Fatalf("strict report of the written model: %v %s", r0.Problems, r0.Diagnosis)
	}
	cfg, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := cfg.Labels()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels.QueryCategory, twelve) || !slices.Equal(labels.ResponseCategory, twelve) ||
		cfg.NumCategory != 12 || cfg.NumQueryCategory != 12 || cfg.GuardInnerSize != 32 || !cfg.IsAWQ() {
		t.Fatalf("config.json: labels %v / %v, num %d/%d, inner %d, awq %v", labels.QueryCategory, labels.ResponseCategory,
			cfg.NumCategory, cfg.NumQueryCategory, cfg.GuardInnerSize, cfg.IsAWQ())
	}
	how := map[string]string{}
	for _, f := range rep.Files {
		how[f.Name] = f.How
	}
	if how[backboneFile] != "rewritten" || how[HeadsFile] != "written" || how["tokenizer.json"] == "" {
		t.Errorf("files written: %v", how)
	}
	var onDisk Report
	if b, err := os.ReadFile(filepath.Join(out, ReportFile)); err != nil || json.Unmarshal(b, &onDisk) != nil || len(onDisk.Paths) != 2 {
		t.Errorf("%s: %v", ReportFile, err)
	}

	// The written model's verdicts equal the trainer's evaluation.
	g, err := guard.Load(context.Background(), out, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	results := map[int]*guard.Result{}
	compared, differ := 0, 0
	for _, pr := range rep.Paths {
		if pr.Val == nil || pr.Val.Samples == 0 {
			t.Fatalf("%s: no validation samples", pr.Path)
		}
		for _, rec := range pr.Records() {
			res := results[rec.Line]
			if res == nil {
				ex := rep.ValExamples[slices.IndexFunc(rep.ValExamples, func(e *Example) bool { return e.Line == rec.Line })]
				if res, err = g.Moderate(context.Background(), guardhook.Messages[guard.Message](ex.Messages), nil); err != nil {
					t.Fatal(err)
				}
				results[rec.Line] = res
			}
			v := res.Prompt.Verdict
			if rec.Token >= 0 {
				v = res.Tokens[rec.Token].Verdict
			}
			compared++
			if v.Risk != rec.Risk || v.Category != rec.Category {
				differ++
				if differ <= 5 {
					t.Errorf("line %d %s token %d: moderate says %s/%s, the trainer %s/%s", rec.Line, rec.Path, rec.Token, v.Risk, v.Category, rec.Risk, rec.Category)
				}
			}
		}
		t.Logf("%s: val risk accuracy %.4f, category accuracy %.4f over %d samples", pr.Path, pr.Val.RiskAccuracy, pr.Val.CategoryAccuracy, pr.Val.Samples)
	}
	t.Logf("compared %d verdicts with Moderate on %d conversations, %d differ", compared, len(results), differ)

	// Retrain the written model's query heads: same backbone, so the
	// features come from the cache, and its backbone file is linked.
	o2 := o
	o2.Model, o2.Out, o2.Paths, o2.Categories, o2.Epochs = out, filepath.Join(tmp, "out2"), []Path{Query}, nil, 2
	rep2, err := Run(context.Background(), o2)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep2.Features {
		if f.Cache != "hit" {
			t.Errorf("retraining, features of %s: cache %s, want hit", f.File, f.Cache)
		}
	}
	for _, f := range rep2.Files {
		if f.Name == backboneFile && f.How != "linked" {
			t.Errorf("retraining: %s %s, want linked", f.Name, f.How)
		}
	}
	if got := rep2.Paths[0].KeptCategories; !slices.Equal(got, twelve) {
		t.Errorf("retraining with --init existing kept categories %v, want all 12", got)
	}
	if r2, err := checkpoint.Report(o2.Out); err != nil || !r2.OK() {
		t.Fatalf("strict report of the retrained model: %v %v", err, r2)
	}

	// The same seed gives byte-identical heads; another seed other heads.
	heads := func(o Options) []byte {
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(o.Out, HeadsFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	o3 := o2
	o3.Out = filepath.Join(tmp, "out3")
	first, err := os.ReadFile(filepath.Join(o2.Out, HeadsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(heads(o3), first) {
		t.Error("two runs with the same seed wrote different heads")
	}
	o4 := o2
	o4.Out, o4.Seed = filepath.Join(tmp, "out4"), 2
	if slices.Equal(heads(o4), first) {
		t.Error("seeds 1 and 2 wrote the same heads")
	}
}
