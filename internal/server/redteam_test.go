package server

import (
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/streamguard/streamguard/internal/redteam"
)

// judgedLog collects the positions the server judged, through testObserve.
type judgedLog struct {
	mu     sync.Mutex
	prompt []int
	judged []int
}

func (l *judgedLog) observe(r *Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Prompt != nil {
		l.prompt = append(l.prompt, r.Prompt.Position)
	}
	for _, t := range r.Tokens {
		l.judged = append(l.judged, t.Position)
	}
}

func (l *judgedLog) take() (prompt, judged []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prompt, judged = l.prompt, l.judged
	l.prompt, l.judged = nil, nil
	return prompt, judged
}

func (l *judgedLog) check(t *testing.T, what string, w redteam.Positions) {
	t.Helper()
	if err := w.Check(l.take()); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// runeChunks cuts s into chunks of about n bytes at character boundaries
// (a JSON string carries whole characters).
func runeChunks(s string, n int) []string {
	var out []string
	for len(s) > 0 {
		i := min(n, len(s))
		for i < len(s) && !utf8.RuneStart(s[i]) {
			i++
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// TestRedTeamPositions sends every injection string of the red-team set
// through /v1/moderations (every surface), a streaming session and the
// duplex connection (text appended in chunks of about 3 bytes, splitting
// tags), a resumed stream (the whole text replayed) and the LiteLLM
// guardrail API, and checks that the server judges exactly the positions
// committed in testdata/redteam.
func TestRedTeamPositions(t *testing.T) {
	cases, want, err := redteam.Load()
	if err != nil {
		t.Fatal(err)
	}
	var log judgedLog
	testObserve = log.observe
	defer func() { testObserve = nil }()
	h := newHarness(t, Options{})
	for _, c := range cases {
		for _, surface := range redteam.Surfaces {
			w := want[[2]string{c.ID, surface}]
			msgs := redteam.Messages(surface, c.Text)
			what := c.ID + " at " + surface

			var mod map[string]any
			if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": map[string]any{"messages": msgs}}, &mod); code != 200 {
				t.Fatalf("%s: moderations status %d: %v", what, code, mod)
			}
			log.check(t, what+" (moderations)", w)

			if surface == "reasoning" {
				continue // sessions take response text; reasoning comes through moderations and the proxy
			}
			prompt, resp := msgs[:len(msgs)-1], strings.TrimLeft(msgs[len(msgs)-1].Content, "\n")
			var st streamResponse
			if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"messages": prompt}, &st); code != 201 {
				t.Fatalf("%s: open status %d", what, code)
			}
			for _, chunk := range runeChunks(resp, 3) {
				var a streamResponse
				if code, _ := h.do("POST", "/v1/streams/"+st.ID+"/append", "", map[string]any{"text": chunk}, &a); code != 200 {
					t.Fatalf("%s: append status %d", what, code)
				}
			}
			h.do("POST", "/v1/streams/"+st.ID+"/flush", "", nil, nil)
			h.do("DELETE", "/v1/streams/"+st.ID, "", nil, nil)
			log.check(t, what+" (stream)", w)

			// A resumed stream replays the same text as text: the same
			// positions are judged.
			resume := map[string]any{"resume": true, "messages": prompt, "response": map[string]any{"text": resp, "flush": true}}
			if code, _ := h.do("POST", "/v1/streams", "", resume, &st); code != 201 {
				t.Fatalf("%s: resume status %d", what, code)
			}
			h.do("DELETE", "/v1/streams/"+st.ID, "", nil, nil)
			log.check(t, what+" (resumed stream)", w)

			d := h.connect("", false)
			d.do(map[string]any{"op": "open", "messages": prompt})
			for _, chunk := range runeChunks(resp, 3) {
				d.do(map[string]any{"op": "append", "text": chunk})
			}
			d.do(map[string]any{"op": "flush"})
			d.do(map[string]any{"op": "close"})
			log.check(t, what+" (duplex)", w)

			var ll map[string]any
			body := map[string]any{"input_type": "response", "texts": []string{resp}, "structured_messages": prompt}
			if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "", body, &ll); code != 200 {
				t.Fatalf("%s: litellm status %d: %v", what, code, ll)
			}
			log.check(t, what+" (litellm)", w)
		}
	}
}
