package train

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestPlantedLinearRule: on labels that are a planted linear function of
// the backbone's hidden states (random directions, margin), training
// recovers the rule on held-out conversations: risk and category accuracy
// of the written (BF16-rounded) weights at least 98% on both paths.
//
// The conversations are short (1–3 word prompts; a quarter have a 4–8
// word response) so the backbone runs few tokens; the features extracted
// to plant the labels are stored in the feature cache, where train-heads
// finds them.
func TestPlantedLinearRule(t *testing.T) {
	dir := tinyModel(t, "bf16")
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const total = 7000
	r := newRNG(11, "planted conversations")
	var convMsgs [][]tokenizer.Message
	for i := range total {
		resp := 0
		if i%4 == 0 {
			resp = 4 + r.intn(5)
		}
		convMsgs = append(convMsgs, randomConversation(r, 1+r.intn(3), resp, false))
	}
	c := newCorpus(t, m, convMsgs)
	tax := Taxonomy{Risk: []string{"Safe", "Unsafe", "Controversial"}, Categories: []string{"Alpha", "Beta", "Gamma", "Delta"}}
	rules := plantRules(12, c.H, tax, c.byPath(), 0.6)
	lines, kept := c.plant(t, rules, tax)
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")
	split := len(lines) * 4 / 5
	writeLines(t, filepath.Join(tmp, "train.jsonl"), lines[:split])
	writeLines(t, filepath.Join(tmp, "val.jsonl"), lines[split:])
	c.primeCache(t, dir, cache, kept[:split])
	c.primeCache(t, dir, cache, kept[split:])

	o := DefaultOptions()
	o.Model, o.Data, o.Val, o.Out = dir, filepath.Join(tmp, "train.jsonl"), filepath.Join(tmp, "val.jsonl"), filepath.Join(tmp, "out")
	o.Categories, o.Init, o.Epochs, o.Patience, o.LR, o.CacheDir = tax.Categories, InitRandom, 40, 8, 3e-3, cache
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Features {
		if f.Cache != "hit" {
			t.Errorf("features of %s: cache %s, want the primed entry", f.File, f.Cache)
		}
	}
	if len(rep.Paths) != 2 {
		t.Fatalf("trained %d paths, want 2", len(rep.Paths))
	}
	for _, pr := range rep.Paths {
		ev := pr.Val
		t.Logf("%s: %d train / %d val samples, %d epochs (best %d, %.2fs each), val risk acc %.4f, category acc %.4f (%d non-Safe), train risk acc %.4f",
			pr.Path, pr.TrainSamples, pr.ValSamples, len(pr.Epochs), pr.BestEpoch, pr.SecondsPerEpoch, ev.RiskAccuracy, ev.CategoryAccuracy, ev.CategorySamples, pr.Train.RiskAccuracy)
		if ev.RiskAccuracy < 0.98 || ev.CategoryAccuracy < 0.98 {
			t.Errorf("%s: held-out risk accuracy %.4f, category accuracy %.4f; want both >= 0.98", pr.Path, ev.RiskAccuracy, ev.CategoryAccuracy)
		}
	}
}
