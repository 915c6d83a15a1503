package train

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestMeasurePlanted prepares the measured run of the planted task on a
// real-shaped backbone; it runs only when STREAMGUARD_TRAIN_MEASURE names
// a model folder, and writes to STREAMGUARD_TRAIN_MEASURE_OUT:
//
//   - it draws STREAMGUARD_TRAIN_MEASURE_N (default 10,000) short
//     conversations (1–2 word prompts; every STREAMGUARD_TRAIN_MEASURE_RESP_EVERY-th
//     (10) with a response of STREAMGUARD_TRAIN_MEASURE_RESP_WORDS (4) words),
//     extracts their hidden states with train-heads' extraction code and
//     logs its throughput;
//   - planted-margin.jsonl: labels by a planted linear rule with margin
//     (the conversations whose prompt falls in the margin are left out);
//     planted-all.jsonl: every conversation labelled by the same rule,
//     without margin;
//   - cache/: the feature cache entries of both files, so that
//     `streamguard train-heads --cache-dir OUT/cache` starts training at
//     once.
func TestMeasurePlanted(t *testing.T) {
	dir, out := os.Getenv("STREAMGUARD_TRAIN_MEASURE"), os.Getenv("STREAMGUARD_TRAIN_MEASURE_OUT")
	if dir == "" || out == "" {
		t.Skip("set STREAMGUARD_TRAIN_MEASURE=MODEL_DIR and STREAMGUARD_TRAIN_MEASURE_OUT=DIR")
	}
	envInt := func(name string, def int) int {
		if s := os.Getenv(name); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				t.Fatalf("%s=%q: want a count", name, s)
			}
			return v
		}
		return def
	}
	n := envInt("STREAMGUARD_TRAIN_MEASURE_N", 10000)
	respWords := envInt("STREAMGUARD_TRAIN_MEASURE_RESP_WORDS", 4)
	respEvery := max(1, envInt("STREAMGUARD_TRAIN_MEASURE_RESP_EVERY", 10))
	start := time.Now()
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Logf("load %.1fs", time.Since(start).Seconds())
	r := newRNG(31, "measured conversations")
	var convMsgs [][]tokenizer.Message
	for i := range n {
		resp := 0
		if i%respEvery == 0 {
			resp = respWords
		}
		convMsgs = append(convMsgs, randomConversation(r, 1+r.intn(2), resp, false))
	}
	start = time.Now()
	last := time.Now()
	c := newCorpusProgress(t, m, convMsgs, func(done, total, tokens int, el time.Duration) {
		if time.Since(last) > time.Minute || done == total {
			last = time.Now()
			t.Logf("extract: %d/%d conversations, %d tokens, %.1f tokens/s", done, total, tokens, float64(tokens)/el.Seconds())
		}
	})
	el := time.Since(start).Seconds()
	t.Logf("extracted %d conversations, %d rows, %d tokens in %.1fs: %.1f tokens/s, %.1f conversations/s",
		n, len(c.X)/c.H, c.tokens, el, float64(c.tokens)/el, float64(n)/el)

	tax := Taxonomy{Risk: []string{"Safe", "Unsafe", "Controversial"}, Categories: []string{"Alpha", "Beta", "Gamma", "Delta"}}
	cache := filepath.Join(out, "cache")
	for _, v := range []struct {
		name string
		keep float64
	}{{"planted-margin.jsonl", 0.6}, {"planted-all.jsonl", 1}} {
		rules := plantRules(32, c.H, tax, c.byPath(), v.keep)
		if v.keep == 1 {
			for _, r := range rules {
				r.riskMargin, r.catMargin = -1, -1
			}
		}
		lines, kept := c.plant(t, rules, tax)
		writeLines(t, filepath.Join(out, v.name), lines)
		c.primeCache(t, dir, cache, kept)
		t.Logf("%s: %d examples", v.name, len(lines))
	}
}
