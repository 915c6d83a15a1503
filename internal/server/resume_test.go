package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// The central guarantee of resume: a stream lost at any point and resumed
// from the conversation so far, on a fresh server, gives from then on
// exactly the verdicts, flag and decision of the stream that was never
// interrupted, bit for bit.

// resumeText is cut everywhere: multi-byte characters (a dash, an emoji),
// a combining accent that NFC joins to the letter before it, words the
// text encoder holds back until the next character decides them.
const resumeText = "Boil water, pour it over the leaves — wait three minutes 🍵, then enjoy: cafe\u0301 au lait? Non."

// resumeConv is a conversation for the resume tests: the body that opens
// the stream, completed turns (the response to the previous prompt, then
// the next prompt), and the response being streamed when the stream is
// lost, cut at every character.
type resumeConv struct {
	name  string
	open  map[string]any
	turns []convTurn
	text  string
}

type convTurn struct {
	response string
	prompt   map[string]any
}

func resumeConvs() []resumeConv {
	return []resumeConv{
		{name: "prompt", open: map[string]any{"prompt": testPrompt}, text: resumeText},
		{name: "messages-with-prefix", open: map[string]any{"messages": []tokenizer.Message{
			{Role: "system", Content: "Be brief."}, {Role: "user", Content: testPrompt}, {Role: "assistant", Content: "Sure. "}}},
			text: resumeText},
		{name: "multi-turn", open: map[string]any{"system": "Be brief.", "prompt": testPrompt}, turns: []convTurn{
			{response: testResponse, prompt: map[string]any{"messages": []tokenizer.Message{{Role: "user", Content: "And coffee, é?"}}}},
			{response: "Grind the beans 🫘.", prompt: map[string]any{"prompt": "Thanks!"}},
		}, text: resumeText},
	}
}

// uncut is the uninterrupted run of a conversation, its last response
// appended one character at a time: the stream's state after each
// character is the state a client lost there had reached.
type uncut struct {
	prompt *guard.PromptVerdict // the last prompt's verdict
	cuts   []cutState           // after the first b characters of the last response
	flush  []guard.TokenVerdict // what the final flush judged
	final  State
}

type cutState struct {
	tokens []guard.TokenVerdict // the last response's verdicts so far
	state  State
}

func runUncut(t *testing.T, c *streamClient, conv resumeConv) *uncut {
	t.Helper()
	must := func(r streamResponse, err error) streamResponse {
		t.Helper()
		if err != nil {
			t.Fatalf("%s (uninterrupted): %v", conv.name, err)
		}
		return r
	}
	r := must(c.open(conv.open))
	u := &uncut{prompt: r.Prompt}
	cur := r.Tokens
	for i, turn := range conv.turns {
		for _, chunk := range runeChunks(turn.response, 5) {
			must(c.call("append", map[string]any{"text": chunk}))
		}
		if i%2 == 0 { // flushed or not, the next prompt ends the response
			must(c.call("flush", nil))
		}
		r = must(c.call("prompt", turn.prompt))
		u.prompt, cur = r.Prompt, nil
	}
	u.cuts = append(u.cuts, cutState{slices.Clone(cur), r.State})
	for _, ch := range conv.text {
		r = must(c.call("append", map[string]any{"text": string(ch)}))
		cur = append(cur, r.Tokens...)
		u.cuts = append(u.cuts, cutState{slices.Clone(cur), r.State})
	}
	r = must(c.call("flush", nil))
	u.flush, u.final = r.Tokens, r.State
	return u
}

// resumeBody is the body that resumes conv lost after prefix of its last
// response (none when respond is false); flush says whether the earlier
// responses are sent as flushed (it makes no difference: the next prompt
// ends them).
func (conv resumeConv) resumeBody(prefix string, respond, flush bool) map[string]any {
	body := maps.Clone(conv.open)
	body["resume"], body["tokens_from"] = true, 0
	last := func(m map[string]any) {
		if respond {
			m["response"] = map[string]any{"text": prefix}
		}
	}
	if len(conv.turns) == 0 {
		last(body)
		return body
	}
	body["response"] = map[string]any{"text": conv.turns[0].response, "flush": flush}
	var turns []map[string]any
	for i, turn := range conv.turns {
		tm := maps.Clone(turn.prompt)
		if i+1 < len(conv.turns) {
			parts := []map[string]any{{"text": conv.turns[i+1].response}}
			if flush {
				parts = append(parts, map[string]any{"flush": true})
			}
			tm["response"] = parts
		} else {
			last(tm)
		}
		turns = append(turns, tm)
	}
	body["turns"] = turns
	return body
}

// resumeCut resumes conv lost after its last response's first b
// characters, appends the rest and flushes, comparing every answer with
// the uninterrupted run.
func resumeCut(c *streamClient, conv resumeConv, u *uncut, b int) error {
	runes := []rune(conv.text)
	prefix, rest := string(runes[:b]), runes[b:]
	r, err := c.open(conv.resumeBody(prefix, b > 0, b%2 == 0))
	if err != nil {
		return err
	}
	defer c.close()
	if err := diffPrompt(r.Prompt, u.prompt); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := diffCut(r.Tokens, r.State, u.cuts[b]); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	cur := r.Tokens
	state := r.State
	for _, chunk := range []string{string(rest[:len(rest)/2]), string(rest[len(rest)/2:])} {
		if chunk == "" {
			continue
		}
		if r, err = c.call("append", map[string]any{"text": chunk}); err != nil {
			return err
		}
		cur, state = append(cur, r.Tokens...), r.State
	}
	if err := diffCut(cur, state, u.cuts[len(runes)]); err != nil {
		return fmt.Errorf("after appending the rest: %w", err)
	}
	if r, err = c.call("flush", nil); err != nil {
		return err
	}
	if err := diffTokens(r.Tokens, u.flush); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return diffState(r.State, u.final)
}

func diffCut(tokens []guard.TokenVerdict, st State, want cutState) error {
	if err := diffTokens(tokens, want.tokens); err != nil {
		return err
	}
	return diffState(st, want.state)
}

func diffState(got, want State) error {
	got.ID, want.ID = "", ""
	if got != want {
		return fmt.Errorf("state\ngot  %+v\nwant %+v", got, want)
	}
	return nil
}

func diffTokens(got, want []guard.TokenVerdict) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d verdicts, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Index != w.Index || g.Position != w.Position || g.Text != w.Text || g.Risk != w.Risk || g.Category != w.Category ||
			g.NonSafe != w.NonSafe || g.Flagged != w.Flagged || !bitsEqual(g.RiskProbs, w.RiskProbs) || !bitsEqual(g.CategoryProbs, w.CategoryProbs) {
			return fmt.Errorf("token %d:\ngot  %+v\nwant %+v", i, g, w)
		}
	}
	return nil
}

func diffPrompt(got, want *guard.PromptVerdict) error {
	if got == nil || want == nil || got.Risk != want.Risk || got.Category != want.Category || got.Position != want.Position ||
		got.Flagged != want.Flagged || !bitsEqual(got.RiskProbs, want.RiskProbs) || !bitsEqual(got.CategoryProbs, want.CategoryProbs) {
		return fmt.Errorf("prompt verdict\ngot  %+v\nwant %+v", got, want)
	}
	return nil
}

// debouncePolicy is a policy with debounce d whose threshold on the
// non-safe probability (P(Unsafe) + P(Controversial) in strict mode,
// P(Unsafe) in loose mode), the same for every category, flags the
// response of these verdicts as near its middle as it can: the run of
// non-safe tokens that flags it then begins before some cut points and
// completes after them.
func debouncePolicy(m *guard.Model, tokens []guard.TokenVerdict, d int) PolicyConfig {
	l := m.Info().Labels
	unsafe, cont := slices.Index(l.ResponseRisk, guard.Unsafe), slices.Index(l.ResponseRisk, guard.Controversial)
	var best PolicyConfig
	bestDist := math.MaxInt
	for _, mode := range []string{"strict", "loose"} {
		scores := make([]float32, len(tokens))
		for i, tv := range tokens {
			if unsafe >= 0 {
				scores[i] += tv.RiskProbs[unsafe]
			}
			if cont >= 0 && mode == "strict" {
				scores[i] += tv.RiskProbs[cont]
			}
		}
		sorted := slices.Sorted(slices.Values(scores))
		for i := 1; i < len(sorted); i++ {
			if sorted[i] == sorted[i-1] {
				continue
			}
			tau := sorted[i-1] + (sorted[i]-sorted[i-1])/2
			run, flag := 0, -1
			for j, s := range scores {
				if s >= tau {
					run++
				} else {
					run = 0
				}
				if run >= d {
					flag = j
					break
				}
			}
			if dist := max(flag-len(scores)/2, len(scores)/2-flag); flag >= 0 && dist < bestDist {
				thr := map[string]float32{}
				for _, c := range l.ResponseCategory {
					thr[c] = tau
				}
				best, bestDist = PolicyConfig{Mode: mode, Debounce: d, Thresholds: thr}, dist
			}
		}
	}
	return best
}

func oneTenant(p PolicyConfig) *Config {
	return &Config{Tenants: []TenantConfig{{Name: "a", APIKeySHA256: []string{HashKey("key-a")}, Policy: p}}}
}

// TestResumeEveryCut interrupts each conversation after every character
// of its last response (a JSON string carries whole characters; the byte
// cuts are TestResumeEveryByte's), resumes it on a fresh server over REST
// and over the duplex connection, several at once, and checks the resumed
// stream against the uninterrupted one: the prompt verdict, the replayed
// verdicts and state, every later verdict, the flag and the decision.
func TestResumeEveryCut(t *testing.T) {
	m := testModel(t)
	for _, conv := range resumeConvs() {
		t.Run(conv.name, func(t *testing.T) {
			// The verdicts' probabilities, to choose a policy whose debounce
			// run is in progress at many cut points.
			h0 := newHarness(t, Options{})
			probe := runUncut(t, h0.stream("", "probe", false), conv)
			all := append(slices.Clone(probe.cuts[len(probe.cuts)-1].tokens), probe.flush...)
			const debounce = 3
			policy := debouncePolicy(m, all, debounce)

			h1 := newHarness(t, Options{Config: oneTenant(policy)})
			u := runUncut(t, h1.stream("key-a", "uncut", false), conv)
			f := u.final.FlaggedIndex
			if f < debounce-1 {
				t.Fatalf("flagged at %d: want a run of %d completed inside the response", f, debounce)
			}
			inRun, after := 0, 0
			for _, c := range u.cuts {
				if n := len(c.tokens); n > f-(debounce-1) && n <= f {
					inRun++ // the run that flags began before the cut and ends after it
				} else if n > f {
					after++
				}
			}
			if inRun == 0 || after == 0 {
				t.Fatalf("flag at %d: %d cuts inside its run, %d after it", f, inRun, after)
			}
			t.Logf("%d cuts, %d response tokens, flagged at %d (debounce %d): %d cuts inside the flagging run, %d after it",
				len(u.cuts), len(u.cuts[len(u.cuts)-1].tokens)+len(u.flush), f, debounce, inRun, after)

			h2 := newHarness(t, Options{Config: oneTenant(policy)})
			work := make(chan int)
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					for b := range work {
						c := h2.stream("key-a", fmt.Sprintf("cut-%03d", b), b%3 == 0)
						if err := resumeCut(c, conv, u, b); err != nil {
							t.Errorf("cut after %d characters (%s): %v", b, c.kind(), err)
						}
					}
				})
			}
			for b := range len(u.cuts) {
				work <- b
			}
			close(work)
			wg.Wait()
			if n := h2.srv.metrics.openStreams.Load(); n != 0 {
				t.Errorf("%d streams left open", n)
			}
			if got := h2.srv.metrics.resumed.Load(); got != uint64(len(u.cuts)) {
				t.Errorf("streamguard_streams_resumed_total %d, want %d", got, len(u.cuts))
			}
		})
	}
}

// TestResumeEveryByte cuts the text at every byte, mid-character and
// mid-token included, below the JSON layer: the lost stream was sent the
// text's first b bytes (the encoder holding back what is not final yet),
// the resumed one is sent the same bytes, and both go on with the rest.
func TestResumeEveryByte(t *testing.T) {
	m := testModel(t)
	ctx := context.Background()
	h0 := newHarness(t, Options{})
	probe := runUncut(t, h0.stream("", "probe", false), resumeConvs()[0])
	policy := debouncePolicy(m, append(probe.cuts[len(probe.cuts)-1].tokens, probe.flush...), 2)
	h := newHarness(t, Options{Config: oneTenant(policy)})
	tenant := h.srv.tenants.authenticate("key-a")
	text := resumeText
	open := promptInput{Prompt: testPrompt}

	u, first, err := h.srv.openStream(ctx, tenant, "uncut", &createInput{promptInput: open})
	if err != nil {
		t.Fatal(err)
	}
	cuts := []cutState{{nil, first.State}}
	var cur []guard.TokenVerdict
	for i := range len(text) {
		tvs, err := u.appendText(ctx, text[i:i+1], false)
		if err != nil {
			t.Fatal(err)
		}
		cur = append(cur, tvs...)
		cuts = append(cuts, cutState{slices.Clone(cur), u.state()})
	}
	flushed, err := u.flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	final := u.state()
	u.close("closed")
	if final.FlaggedIndex < 0 {
		t.Fatalf("the policy flags nothing: %+v", final)
	}

	zero := 0
	held := 0
	for b := range len(text) + 1 {
		prefix := text[:b]
		in := &createInput{promptInput: open, resumeInput: resumeInput{Resume: true, TokensFrom: &zero}}
		if b > 0 {
			in.Response = responseParts{{Text: &prefix}}
		}
		c, r, err := h.srv.openStream(ctx, tenant, "resumed", in)
		if err != nil {
			t.Fatalf("cut at byte %d: %v", b, err)
		}
		if err := diffCut(r.Tokens, r.State, cuts[b]); err != nil {
			t.Fatalf("cut at byte %d (%q|%q): resume: %v", b, prefix, text[b:], err)
		}
		if c.s.HeldBytes() > 0 {
			held++
		}
		got := r.Tokens
		for _, chunk := range []string{text[b : b+(len(text)-b)/2], text[b+(len(text)-b)/2:]} {
			tvs, err := c.appendText(ctx, chunk, false)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, tvs...)
		}
		if err := diffCut(got, c.state(), cuts[len(text)]); err != nil {
			t.Fatalf("cut at byte %d: after the rest: %v", b, err)
		}
		fl, err := c.flush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffCut(fl, c.state(), cutState{flushed, final}); err != nil {
			t.Fatalf("cut at byte %d: flush: %v", b, err)
		}
		c.close("closed")
	}
	if held < len(text)/2 {
		t.Errorf("the resumed encoder held text back at only %d of %d cuts", held, len(text)+1)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Errorf("%d positions still charged", used)
	}
}

// TestResumeIDsAndParts: a response sent as ids, and one sent as text,
// ids and flushes mixed, resumed after every part (as one list of
// parts) and after every id.
func TestResumeIDsAndParts(t *testing.T) {
	m := testModel(t)
	tok := guardhook.Tokenizer(m)
	ids := tok.EncodeText(testResponse)
	h1 := newHarness(t, Options{})
	h2 := newHarness(t, Options{})
	open := map[string]any{"prompt": testPrompt}

	// ids, one at a time, then resumed after each.
	u := h1.stream("", "ids", false)
	r, err := u.open(open)
	if err != nil {
		t.Fatal(err)
	}
	cuts := []cutState{{nil, r.State}}
	var cur []guard.TokenVerdict
	for _, id := range ids {
		if r, err = u.call("append", map[string]any{"ids": []int{id}}); err != nil {
			t.Fatal(err)
		}
		cur = append(cur, r.Tokens...)
		cuts = append(cuts, cutState{slices.Clone(cur), r.State})
	}
	for k := range len(ids) + 1 {
		body := maps.Clone(open)
		body["resume"], body["tokens_from"] = true, 0
		if k > 0 {
			body["response"] = map[string]any{"ids": ids[:k]}
		}
		c := h2.stream("", fmt.Sprintf("ids-%d", k), k%2 == 1)
		r, err := c.open(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffCut(r.Tokens, r.State, cuts[k]); err != nil {
			t.Fatalf("after %d ids: %v", k, err)
		}
		if k < len(ids) {
			if r, err = c.call("append", map[string]any{"ids": ids[k:]}); err != nil {
				t.Fatal(err)
			}
			if err := diffCut(append(cuts[k].tokens, r.Tokens...), r.State, cuts[len(ids)]); err != nil {
				t.Fatalf("after %d ids, the rest: %v", k, err)
			}
		}
		c.close()
	}

	// Mixed parts: text held back across ids, flushes in the middle.
	parts := []map[string]any{
		{"text": "Boil wa"}, {"ids": ids[:3]}, {"text": "ter 🍵"}, {"flush": true},
		{"text": " then st"}, {"text": "eep", "flush": true}, {"ids": ids[3:6], "flush": true}, {"text": " it. cafe"}, {"text": "\u0301"},
	}
	u = h1.stream("", "parts", false)
	if r, err = u.open(open); err != nil {
		t.Fatal(err)
	}
	pcuts := []cutState{{nil, r.State}}
	cur = nil
	for _, p := range parts {
		op := "append"
		if len(p) == 1 && p["flush"] == true {
			op = "flush"
		}
		if r, err = u.call(op, p); err != nil {
			t.Fatal(err)
		}
		cur = append(cur, r.Tokens...)
		pcuts = append(pcuts, cutState{slices.Clone(cur), r.State})
	}
	if r, err = u.call("flush", nil); err != nil {
		t.Fatal(err)
	}
	finalTokens, final := append(slices.Clone(cur), r.Tokens...), r.State
	for k := range len(parts) + 1 {
		body := maps.Clone(open)
		body["resume"], body["tokens_from"] = true, 0
		if k > 0 {
			body["response"] = parts[:k]
		}
		c := h2.stream("", fmt.Sprintf("parts-%d", k), k%2 == 0)
		r, err := c.open(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffCut(r.Tokens, r.State, pcuts[k]); err != nil {
			t.Fatalf("after %d parts: %v", k, err)
		}
		got := r.Tokens
		for _, p := range parts[k:] {
			op := "append"
			if len(p) == 1 && p["flush"] == true {
				op = "flush"
			}
			if r, err = c.call(op, p); err != nil {
				t.Fatal(err)
			}
			got = append(got, r.Tokens...)
		}
		if r, err = c.call("flush", nil); err != nil {
			t.Fatal(err)
		}
		if err := diffCut(append(got, r.Tokens...), r.State, cutState{finalTokens, final}); err != nil {
			t.Fatalf("after %d parts, the rest: %v", k, err)
		}
		c.close()
	}
}

// TestResumeAnswer: the resumed stream takes the client's id; tokens_from
// chooses which replayed verdicts come back; the audit log and the metric
// record it; a second resume under an open id is a 409.
func TestResumeAnswer(t *testing.T) {
	h := newHarness(t, Options{})
	id := "0123456789abcdef0123456789abcdef"
	body := map[string]any{"resume": true, "prompt": testPrompt, "response": map[string]any{"text": testResponse[:40]}}
	var r streamResponse
	code, hdr := h.doID("POST", "/v1/streams", id, body, &r)
	if code != http.StatusCreated || r.ID != id || hdr.Get(StreamHeader) != id || r.Prompt == nil || len(r.Tokens) != 0 {
		t.Fatalf("resume: status %d id %q header %q %+v", code, r.ID, hdr.Get(StreamHeader), r)
	}
	n := r.State.Decision.Tokens
	if n < 5 {
		t.Fatalf("replayed %d tokens", n)
	}
	var e errBody
	if code, _ := h.doID("POST", "/v1/streams", id, body, &e); code != http.StatusConflict || e.Error.Code != "stream_exists" {
		t.Fatalf("second resume under an open id: status %d %+v", code, e.Error)
	}
	h.do("DELETE", "/v1/streams/"+id, "", nil, nil)
	for _, from := range []int{0, 3, n, n + 10} {
		body["tokens_from"] = from
		var r streamResponse
		if code, _ := h.doID("POST", "/v1/streams", id, body, &r); code != http.StatusCreated {
			t.Fatalf("tokens_from %d: status %d", from, code)
		}
		if len(r.Tokens) != max(0, n-from) || len(r.Tokens) > 0 && r.Tokens[0].Index != from {
			t.Fatalf("tokens_from %d: %d verdicts from %v", from, len(r.Tokens), r.Tokens)
		}
		h.do("DELETE", "/v1/streams/"+id, "", nil, nil)
	}
	if !strings.Contains(h.audit.String(), `"msg":"stream resumed","tenant":"default","stream":"`+id+`","requests":2`) {
		t.Fatalf("audit log:\n%s", h.audit.String())
	}
	var metrics bytes.Buffer
	h.srv.metrics.write(&metrics)
	if !strings.Contains(metrics.String(), "streamguard_streams_resumed_total 5\n") {
		t.Fatalf("metrics:\n%s", metrics.String())
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open", n)
	}
}

// TestResumeBadRequests: the resume fields are checked before anything
// is opened; the duplex takes them on open only.
func TestResumeBadRequests(t *testing.T) {
	h := newHarness(t, Options{})
	user := []tokenizer.Message{{Role: "user", Content: "hi"}}
	for _, tc := range []struct {
		body any
		msg  string
	}{
		{map[string]any{"prompt": "hi", "response": map[string]any{"text": "x"}}, `set "resume": true`},
		{map[string]any{"prompt": "hi", "turns": []any{}}, `set "resume": true`},
		{map[string]any{"prompt": "hi", "tokens_from": 0}, `set "resume": true`},
		{map[string]any{"resume": true}, "no prompt"},
		{map[string]any{"resume": true, "prompt": "hi", "tokens_from": -1}, "tokens_from"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"text": "x", "ids": []int{1}}}, `response: give "text" or "ids"`},
		{map[string]any{"resume": true, "prompt": "hi", "response": []any{map[string]any{"text": "x"}, map[string]any{}}}, "response[1]: nothing appended"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": []int{-1}}}, "response: guard: token id -1"},
		{`{"resume": true, "prompt": "hi", "response": "text"}`, "invalid JSON"},
		{map[string]any{"resume": true, "prompt": "hi", "turns": []any{map[string]any{}}}, "turns[0]: no prompt"},
		{map[string]any{"resume": true, "prompt": "hi", "turns": []any{map[string]any{"messages": []tokenizer.Message{{Role: "robot", Content: "x"}}}}}, `turns[0]: messages[0]: role "robot"`},
		{map[string]any{"resume": true, "prompt": "hi", "turns": []any{map[string]any{"messages": append(user, tokenizer.Message{Role: "assistant", Content: "x"})}}}, "turns[0]: the last message must be the user's turn"},
		{map[string]any{"resume": true, "prompt": "hi", "turns": []any{map[string]any{"prompt": " "}}}, "turns[0].prompt: "},
	} {
		var e errBody
		if code, _ := h.do("POST", "/v1/streams", "", tc.body, &e); code != 400 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%v: status %d %+v, want 400 %q", tc.body, code, e.Error, tc.msg)
		}
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open", n)
	}
	req, _ := http.NewRequest("POST", h.ts.URL+"/v1/streams/connect", strings.NewReader(`{"op": "open", "prompt": "hi"}`+"\n"))
	req.Header.Set(StreamHeader, "not an id")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e errBody
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 400 || e.Error.Code != "invalid_stream_id" {
		t.Fatalf("connect with a bad %s: status %d %+v", StreamHeader, resp.StatusCode, e.Error)
	}
	d := h.connect("", false)
	if rep := d.do(map[string]any{"op": "open", "prompt": "hi", "response": map[string]any{"text": "x"}}); rep.Error == nil || !strings.Contains(rep.Error.Message, `set "resume": true`) {
		t.Fatalf("duplex open: %+v", rep)
	}
	d.do(map[string]any{"op": "open", "prompt": "hi"})
	if rep := d.do(map[string]any{"op": "append", "text": "x", "resume": true}); rep.Error == nil || !strings.Contains(rep.Error.Message, "belong to the open operation") || rep.Error.StreamEnded {
		t.Fatalf("duplex append with resume: %+v", rep)
	}
}

// TestResumeLimits: a resume counts against the stream length and the KV
// budget as a prompt does: 400 context_length_exceeded naming the field,
// 429 kv_budget; nothing stays open or charged.
func TestResumeLimits(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{MaxStreamTokens: 60})
	long := strings.Repeat(" word", 60)
	for _, tc := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"resume": true, "prompt": strings.Repeat("word ", 80)}, "prompt"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"text": long}}, "response"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": make([]int, 70)}}, "response"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"text": "Hello."},
			"turns": []any{map[string]any{"prompt": "And?", "response": map[string]any{"text": long}}}}, "turns[0].response"},
		{map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"text": "Hello."},
			"turns": []any{map[string]any{"messages": []tokenizer.Message{{Role: "user", Content: long}}}}}, "turns[0].messages"},
	} {
		var e errBody
		code, _ := h.do("POST", "/v1/streams", "", tc.body, &e)
		if code != 400 || e.Error.Code != "context_length_exceeded" || e.Error.Param == nil || *e.Error.Param != tc.param {
			t.Errorf("%v: status %d %+v, want 400 context_length_exceeded on %s", tc.body, code, e.Error, tc.param)
		}
	}
	if used, _ := h.srv.budget.usage(); used != 0 || h.srv.metrics.openStreams.Load() != 0 {
		t.Fatalf("%d positions charged after refusals", used)
	}
	// A resume that fits exactly: what a stream of that length holds.
	var r streamResponse
	body := map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": make([]int, 40)}}
	if code, _ := h.do("POST", "/v1/streams", "", body, &r); code != 201 || r.State.Decision.Tokens != 40 {
		t.Fatalf("fitting resume: status %d %+v", code, r.State)
	}

	// 300 positions of budget, 100 of reserve: a resume is charged what it
	// replays plus the reserve; one longer than the 128 positions a stream
	// may hold under that budget is a length error, not an overload.
	bpp := m.Info().KVBytesPerToken
	hb := newHarness(t, Options{KVBudgetBytes: 300 * bpp, StreamReserveTokens: 100})
	var e errBody
	big := map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": make([]int, 120)}}
	if code, _ := hb.do("POST", "/v1/streams", "", big, &e); code != 400 || e.Error.Code != "context_length_exceeded" {
		t.Fatalf("resume over the budget: status %d %+v", code, e.Error)
	}
	var r2 streamResponse
	if code, _ := hb.do("POST", "/v1/streams", "", map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": make([]int, 60)}}, &r2); code != 201 {
		t.Fatalf("resume within a stream's room: status %d", code)
	}
	if code, hdr := hb.do("POST", "/v1/streams", "", big, &e); code != 400 {
		t.Fatalf("second resume: status %d %+v %v", code, e.Error, hdr)
	}
	hb.do("DELETE", "/v1/streams/"+r2.ID, "", nil, nil)
	if used, _ := hb.srv.budget.usage(); used != 0 || hb.srv.metrics.openStreams.Load() != 0 {
		t.Fatalf("%d positions charged after a refusal", used)
	}
	small := map[string]any{"resume": true, "prompt": "hi", "response": map[string]any{"ids": make([]int, 10)}}
	if code, _ := hb.do("POST", "/v1/streams", "", small, &r); code != 201 {
		t.Fatalf("resume within the budget: status %d", code)
	}
	want := hb.srv.budget.capBound(r.State.Position + 100)
	if used, _ := hb.srv.budget.usage(); used != want {
		t.Fatalf("charged %d positions, want %d (replayed %d + reserve 100)", used, want, r.State.Position)
	}
}

// doID is do with the stream's X-Streamguard-Stream header.
func (h *harness) doID(method, path, id string, body any, out any) (int, http.Header) {
	h.t.Helper()
	js, err := json.Marshal(body)
	if err != nil {
		h.t.Fatal(err)
	}
	req, err := http.NewRequest(method, h.ts.URL+path, bytes.NewReader(js))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set(StreamHeader, id)
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header
}

// streamClient is one stream over REST or the duplex connection, for
// tests that run many at once: it returns errors rather than failing.
type streamClient struct {
	h      *harness
	key    string
	id     string
	duplex bool

	w    *io.PipeWriter
	rd   *bufio.Reader
	body io.Closer
}

// stream returns a client for a stream with id, which it opens over the
// duplex connection when duplex is set.
func (h *harness) stream(key, id string, duplex bool) *streamClient {
	return &streamClient{h: h, key: key, id: id, duplex: duplex}
}

func (c *streamClient) kind() string {
	if c.duplex {
		return "duplex"
	}
	return "REST"
}

func (c *streamClient) request(method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, c.h.ts.URL+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(StreamHeader, c.id)
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

func (c *streamClient) open(body map[string]any) (streamResponse, error) {
	if !c.duplex {
		return c.rest("POST", "/v1/streams", body, http.StatusCreated)
	}
	pr, pw := io.Pipe()
	req, err := c.request("POST", "/v1/streams/connect", pr)
	if err != nil {
		return streamResponse{}, err
	}
	resp, err := c.h.ts.Client().Do(req)
	if err != nil {
		return streamResponse{}, err
	}
	if resp.StatusCode != 200 || resp.Header.Get(StreamHeader) != c.id {
		resp.Body.Close()
		return streamResponse{}, fmt.Errorf("connect: status %d, %s %q", resp.StatusCode, StreamHeader, resp.Header.Get(StreamHeader))
	}
	c.w, c.rd, c.body = pw, bufio.NewReader(resp.Body), resp.Body
	op := maps.Clone(body)
	op["op"] = "open"
	return c.line(op)
}

// call runs append, flush or prompt.
func (c *streamClient) call(op string, body map[string]any) (streamResponse, error) {
	if !c.duplex {
		return c.rest("POST", "/v1/streams/"+c.id+"/"+op, body, http.StatusOK)
	}
	line := maps.Clone(body)
	if line == nil {
		line = map[string]any{}
	}
	line["op"] = op
	return c.line(line)
}

func (c *streamClient) close() {
	if !c.duplex {
		c.rest("DELETE", "/v1/streams/"+c.id, nil, http.StatusOK)
		return
	}
	if c.w != nil {
		c.line(map[string]any{"op": "close"})
		c.w.Close()
		c.body.Close()
	}
}

func (c *streamClient) rest(method, path string, body map[string]any, want int) (streamResponse, error) {
	var rd io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		if err != nil {
			return streamResponse{}, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := c.request(method, path, rd)
	if err != nil {
		return streamResponse{}, err
	}
	resp, err := c.h.ts.Client().Do(req)
	if err != nil {
		return streamResponse{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return streamResponse{}, err
	}
	var r streamResponse
	if resp.StatusCode != want {
		return r, fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, err
	}
	if r.ID != c.id || r.State.ID != c.id {
		return r, fmt.Errorf("%s %s: answer for stream %q (state %q), want %q", method, path, r.ID, r.State.ID, c.id)
	}
	return r, nil
}

func (c *streamClient) line(op map[string]any) (streamResponse, error) {
	js, err := json.Marshal(op)
	if err != nil {
		return streamResponse{}, err
	}
	if _, err := c.w.Write(append(js, '\n')); err != nil {
		return streamResponse{}, err
	}
	raw, err := c.rd.ReadBytes('\n')
	if err != nil {
		return streamResponse{}, fmt.Errorf("%v: %w", op["op"], err)
	}
	var rep duplexReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return streamResponse{}, err
	}
	if rep.Error != nil {
		return streamResponse{}, fmt.Errorf("%v: %s: %s", op["op"], rep.Error.Code, rep.Error.Message)
	}
	if rep.ID != c.id || rep.State == nil || rep.State.ID != c.id {
		return streamResponse{}, errors.New("duplex answer without the stream's id or state: " + string(raw))
	}
	return streamResponse{ID: rep.ID, Prompt: rep.Prompt, Tokens: tokensOrEmpty(rep.Tokens), Ended: rep.Ended, State: *rep.State}, nil
}
