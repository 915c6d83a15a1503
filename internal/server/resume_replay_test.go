package server

import (
	"runtime"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/guardhook"
)

// TestResumeTextPartsQueuedAsOne: a resume's consecutive text parts are
// queued as one text. Queued one by one, each part re-counted the whole
// held word (a run of spaces stays held: about 128 bytes per id) near the
// stream's length bound, so one request of many small parts did the work
// of as many rate-limited appends: seconds of a core per thousand parts.
// Memory allocated is the measure (re-counting a 100 KB word allocates
// with it; no timing): many parts cost about what one part of their text
// costs, and the stream is the same.
func TestResumeTextPartsQueuedAsOne(t *testing.T) {
	h := newHarness(t, Options{MaxStreamTokens: 1024})
	tok := guardhook.Tokenizer(h.srv.model)
	const held, n, gap = 115000, 300, 40
	// A prompt that leaves the held word ~gap ids of room under the
	// stream's limit (the tiny model's 8192 positions).
	ids := len(tok.EncodeText(strings.Repeat(" ", held+n)))
	prompt := strings.Repeat("0", h.srv.maxStreamTokens-ids-gap-30)

	resume := func(parts []map[string]any) (uint64, State) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var r streamResponse
		code, _ := h.do("POST", "/v1/streams", "", map[string]any{"resume": true, "prompt": prompt, "response": parts}, &r)
		runtime.ReadMemStats(&after)
		if code != 201 {
			t.Fatalf("resume: status %d", code)
		}
		h.do("DELETE", "/v1/streams/"+r.ID, "", nil, nil)
		r.State.ID = ""
		return after.TotalAlloc - before.TotalAlloc, r.State
	}
	one, oneState := resume([]map[string]any{{"text": "x" + strings.Repeat(" ", held+n)}})
	parts := []map[string]any{{"text": "x" + strings.Repeat(" ", held)}}
	for range n {
		parts = append(parts, map[string]any{"text": " "})
	}
	many, manyState := resume(parts)
	if manyState != oneState {
		t.Errorf("the same text in %d parts: state %+v, in one part %+v", len(parts), manyState, oneState)
	}
	if many > 3*one+(8<<20) {
		t.Errorf("a resume of %d small parts allocated %d MB, the same text in one part %d MB: the parts were queued one by one", len(parts), many>>20, one>>20)
	}
}

// TestResumeEndingWithPromptReportsEnded: a resume that carries the
// request the lost replica never answered, here the next prompt, reports
// the previous response's final state in "ended" as that prompt's answer
// had it: a flag on its last words, held back until the prompt ended the
// response. The current response has not begun: tokens_from 0 gives no
// verdicts. The duplex open answers the same.
func TestResumeEndingWithPromptReportsEnded(t *testing.T) {
	const text = "Boil water, then pour it over the leaves and steep"
	open := map[string]any{"prompt": testPrompt}
	next := map[string]any{"prompt": "Thanks!"}

	// The response's token count, to place a flag on its last token
	// (which the encoder holds back until the prompt ends the response).
	h0 := newHarness(t, Options{})
	c0 := h0.stream("", "probe", false)
	if _, err := c0.open(open); err != nil {
		t.Fatal(err)
	}
	r0, err := c0.call("append", map[string]any{"text": text})
	if err != nil {
		t.Fatal(err)
	}
	p0, err := c0.call("prompt", next)
	if err != nil {
		t.Fatal(err)
	}
	total := len(r0.Tokens) + len(p0.Tokens)
	if len(p0.Tokens) == 0 {
		t.Fatalf("the prompt judged no held text")
	}
	thr := map[string]float32{}
	for _, c := range h0.srv.model.Info().Labels.ResponseCategory {
		thr[c] = 1e-6 // every token non-safe: the run of all of them flags at the last
	}
	policy := PolicyConfig{Debounce: total, Thresholds: thr}

	// Uninterrupted: the prompt's answer reports the flag on the last word.
	h1 := newHarness(t, Options{Config: oneTenant(policy)})
	c1 := h1.stream("key-a", "uncut", false)
	if _, err := c1.open(open); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.call("append", map[string]any{"text": text}); err != nil {
		t.Fatal(err)
	}
	p1, err := c1.call("prompt", next)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Ended == nil || p1.Ended.Status != "flagged" || len(p1.Tokens) == 0 || !p1.Tokens[len(p1.Tokens)-1].Flagged {
		t.Fatalf("uninterrupted: the prompt's answer does not report the flag: ended %+v tokens %d", p1.Ended, len(p1.Tokens))
	}

	// Lost before the prompt was answered; resumed with it, as documented,
	// over REST and over the duplex connection.
	for _, duplex := range []bool{false, true} {
		h2 := newHarness(t, Options{Config: oneTenant(policy)})
		c2 := h2.stream("key-a", "resumed", duplex)
		body := map[string]any{"resume": true, "prompt": testPrompt, "response": map[string]any{"text": text},
			"turns": []any{next}, "tokens_from": 0}
		r2, err := c2.open(body)
		if err != nil {
			t.Fatal(err)
		}
		if diffPrompt(r2.Prompt, p1.Prompt) != nil || r2.State.Position != p1.State.Position {
			t.Fatalf("%s: the resume is not at the uninterrupted stream's point: %+v vs %+v", c2.kind(), r2.State, p1.State)
		}
		if r2.Ended == nil || *r2.Ended != *p1.Ended {
			t.Errorf("%s, resumed with the prompt: ended %+v, uninterrupted %+v", c2.kind(), r2.Ended, p1.Ended)
		}
		if len(r2.Tokens) != 0 {
			t.Errorf("%s, resumed with the prompt and tokens_from 0: %d verdicts of a response not begun", c2.kind(), len(r2.Tokens))
		}
		c2.close()
	}
}
