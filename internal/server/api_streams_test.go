package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

const (
	testPrompt   = "How do I make a cup of tea?"
	testResponse = "Boil water, pour it over the leaves, wait three minutes — then enjoy 🍵 with milk or lemon."
)

// TestStreamLifecycle opens a stream, appends text in uneven chunks and
// ids, flushes, reads the state, continues with a second user turn and
// closes: every verdict equals the library's solo run bit for bit.
func TestStreamLifecycle(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{})
	user := []tokenizer.Message{{Role: "user", Content: testPrompt}}
	respIDs := guardhook.Tokenizer(m).Encode(testResponse)
	wantPV, wantTok := solo(t, m, m.Policy(), user, respIDs)

	var created streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
		t.Fatalf("create: status %d", code)
	}
	if len(created.ID) != 32 || created.State.ID != created.ID || created.State.Status != "allowed" {
		t.Fatalf("create: %+v", created)
	}
	samePrompt(t, "create", created.Prompt, wantPV)

	// JSON strings hold whole characters, so the chunks are cut between
	// runes, in uneven sizes.
	var got []guard.TokenVerdict
	b := []rune(testResponse)
	for i, n := 0, 0; i < len(b); i += n {
		n = 1 + i%7
		end := min(i+n, len(b))
		var r streamResponse
		if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"text": string(b[i:end])}, &r); code != 200 {
			t.Fatalf("append: status %d", code)
		}
		got = append(got, r.Tokens...)
	}
	var fl streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/flush", "", nil, &fl); code != 200 {
		t.Fatalf("flush: status %d", code)
	}
	got = append(got, fl.Tokens...)
	sameTokens(t, "text chunks", got, wantTok)
	if fl.State.Decision.Tokens != len(respIDs) || fl.State.Position != wantTok[len(wantTok)-1].Position+1 {
		t.Fatalf("state after flush %+v", fl.State)
	}
	wantStatus := "allowed"
	for _, tv := range wantTok {
		if tv.Flagged {
			wantStatus = "flagged"
			if fl.State.FlaggedIndex != tv.Index {
				t.Fatalf("flagged index %d, want %d", fl.State.FlaggedIndex, tv.Index)
			}
		}
	}
	if fl.State.Status != wantStatus {
		t.Fatalf("status %q, want %q", fl.State.Status, wantStatus)
	}

	var st streamResponse
	if code, _ := h.do("GET", "/v1/streams/"+created.ID, "", nil, &st); code != 200 || st.State != fl.State {
		t.Fatalf("get: status %d state %+v, want %+v", code, st.State, fl.State)
	}

	// A second turn continues the conversation, as the library does.
	second := []tokenizer.Message{{Role: "user", Content: "And coffee?"}}
	ref := m.NewStream()
	defer ref.Close()
	if _, err := ref.JudgePrompt(context.Background(), guardhook.Messages[guard.Message](user)); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.AppendIDs(context.Background(), respIDs); err != nil {
		t.Fatal(err)
	}
	want2, err := ref.JudgePrompt(context.Background(), guardhook.Messages[guard.Message](second))
	if err != nil {
		t.Fatal(err)
	}
	var p2 streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/prompt", "", map[string]any{"messages": second}, &p2); code != 200 {
		t.Fatalf("second prompt: status %d", code)
	}
	samePrompt(t, "second turn", p2.Prompt, want2)
	idTok, err := ref.AppendIDs(context.Background(), []int{9707, 11})
	if err != nil {
		t.Fatal(err)
	}
	var ap streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"ids": []int{9707, 11}}, &ap); code != 200 {
		t.Fatalf("append ids: status %d", code)
	}
	sameTokens(t, "ids in second turn", ap.Tokens, tokensOrEmpty(idTok))

	var closed streamResponse
	if code, _ := h.do("DELETE", "/v1/streams/"+created.ID, "", nil, &closed); code != 200 || closed.State.Decision.Tokens != 2 {
		t.Fatalf("close: status %d %+v", code, closed.State)
	}
	if code, _ := h.do("GET", "/v1/streams/"+created.ID, "", nil, nil); code != http.StatusNotFound {
		t.Fatalf("get after close: status %d", code)
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open after close", n)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Fatalf("%d KV positions still charged", used)
	}
	if !strings.Contains(h.audit.String(), `"msg":"stream closed"`) || strings.Contains(h.audit.String(), "tea") {
		t.Fatalf("audit log: want decisions without content:\n%s", h.audit.String())
	}
}

// TestCreateWithResponsePrefix opens a stream with messages that end in
// the assistant's first words: they are judged as Moderate judges them,
// and the response stays open.
func TestCreateWithResponsePrefix(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{})
	msgs := []tokenizer.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: testPrompt}, {Role: "assistant", Content: "\n\nBoil water"}}
	want, err := m.Moderate(context.Background(), guardhook.Messages[guard.Message](msgs), nil)
	if err != nil {
		t.Fatal(err)
	}
	var r streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"messages": msgs}, &r); code != http.StatusCreated {
		t.Fatalf("status %d", code)
	}
	samePrompt(t, "prompt", r.Prompt, want.Prompt)
	sameTokens(t, "prefix", r.Tokens, want.Tokens)
	var ap streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/append", "", map[string]any{"text": " now.", "flush": true}, &ap); code != 200 || len(ap.Tokens) == 0 {
		t.Fatalf("append after prefix: status %d %+v", code, ap)
	}
}

func TestStreamBadRequests(t *testing.T) {
	h := newHarness(t, Options{})
	var e errBody
	for _, tc := range []struct {
		path string
		body any
		code int
		msg  string
	}{
		{"/v1/streams", `{"prompt": `, 400, "invalid JSON"},
		{"/v1/streams", map[string]any{}, 400, "no prompt"},
		{"/v1/streams", map[string]any{"prompt": "  "}, 400, "no content"},
		{"/v1/streams", map[string]any{"messages": []tokenizer.Message{{Role: "robot", Content: "x"}}}, 400, `role "robot"`},
		{"/v1/streams", map[string]any{"messages": []tokenizer.Message{{Role: "user", Content: "x"}}, "prompt": "y"}, 400, "not both"},
		{"/v1/streams/0123456789abcdef0123456789abcdef/append", map[string]any{"text": "x"}, 404, "no stream"},
	} {
		e = errBody{}
		if code, _ := h.do("POST", tc.path, "", tc.body, &e); code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("POST %s %v: status %d %+v, want %d %q", tc.path, tc.body, code, e.Error, tc.code, tc.msg)
		}
	}
	var r streamResponse
	h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &r)
	for _, body := range []any{map[string]any{}, map[string]any{"text": "a", "ids": []int{1}}, map[string]any{"ids": []int{-1}}, map[string]any{"ids": []int{1 << 30}}} {
		e = errBody{}
		if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/append", "", body, &e); code != 400 || e.Error.StreamEnded {
			t.Errorf("append %v: status %d %+v", body, code, e.Error)
		}
	}
	// The stream survives bad requests.
	if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/append", "", map[string]any{"ids": []int{9707}}, nil); code != 200 {
		t.Fatalf("append after bad requests: status %d", code)
	}
}

// flagAll is a tenant policy under which every token flags its response.
func flagAll(m *guard.Model) PolicyConfig {
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.ResponseCategory {
		thr[c] = 0
	}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0
	}
	return PolicyConfig{Debounce: 1, Thresholds: thr}
}

// TestHeldTailJudgedAtTurnEnd: the last word of a response is held back
// (later text could still change how it encodes) until the response ends.
// A prompt or a close that ends it judges it, and the answer carries those
// verdicts and the response's final state: before, they were judged and
// dropped (a prompt) or never judged (a close), so a flag on a response's
// last words reached no client.
func TestHeldTailJudgedAtTurnEnd(t *testing.T) {
	m := testModel(t)
	cfg := twoTenants(func(a, b *TenantConfig) { a.Policy = flagAll(m) })
	h := newHarness(t, Options{Config: cfg})
	open := func() string {
		var created streamResponse
		if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
			t.Fatal(code)
		}
		var r streamResponse
		if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "key-a", map[string]any{"text": "poison"}, &r); code != 200 || len(r.Tokens) != 0 || r.State.Status != "allowed" {
			t.Fatalf("append: status %d, %d verdicts, %s; want the word held", code, len(r.Tokens), r.State.Status)
		}
		return created.ID
	}
	id := open()
	var pr streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+id+"/prompt", "key-a", map[string]any{"prompt": "Thanks"}, &pr); code != 200 {
		t.Fatal(code)
	}
	if len(pr.Tokens) == 0 || !pr.Tokens[0].Flagged || pr.Ended == nil || pr.Ended.Status != "flagged" || pr.Ended.FlaggedIndex != 0 {
		t.Fatalf("prompt after held text: tokens %+v ended %+v", pr.Tokens, pr.Ended)
	}
	if got := tokenText(pr.Tokens); got != "poison" {
		t.Fatalf("the held tail's verdicts spell %q, want %q", got, "poison")
	}
	if pr.Prompt == nil || pr.State.Status != "allowed" || pr.State.Decision.Tokens != 0 {
		t.Fatalf("the new turn: prompt %+v state %+v", pr.Prompt, pr.State)
	}

	id = open()
	var fin streamResponse
	if code, _ := h.do("DELETE", "/v1/streams/"+id, "key-a", nil, &fin); code != 200 {
		t.Fatal(code)
	}
	if tokenText(fin.Tokens) != "poison" || fin.State.Status != "flagged" || fin.State.Decision.Tokens != len(fin.Tokens) {
		t.Fatalf("close after held text: tokens %+v state %+v", fin.Tokens, fin.State)
	}
}

func tokenText(tvs []guard.TokenVerdict) string {
	var b strings.Builder
	for _, tv := range tvs {
		b.WriteString(tv.Text)
	}
	return b.String()
}

// TestRefusedPromptAfterHeldTail: a prompt that ends a response with text
// held back, refused for its own length, changes nothing (the response's
// end is still held, its verdicts come with the flush); one that fits
// alone but not after the response's end is refused with the verdicts of
// that end beside the error, as they were judged.
func TestRefusedPromptAfterHeldTail(t *testing.T) {
	const limit = 200
	m := testModel(t)
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.Policy = flagAll(m) }), MaxStreamTokens: limit})
	open := func() streamResponse {
		var created streamResponse
		if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
			t.Fatal(code)
		}
		var r streamResponse
		if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "key-a", map[string]any{"text": "poison"}, &r); code != 200 || len(r.Tokens) != 0 {
			t.Fatalf("append: %d %+v", code, r.Tokens)
		}
		return r
	}
	type errTokens struct {
		Error  apiErrorBody         `json:"error"`
		Tokens []guard.TokenVerdict `json:"tokens"`
		Ended  *State               `json:"ended"`
	}
	r := open()
	var e errTokens
	if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/prompt", "key-a", map[string]any{"prompt": strings.Repeat("word ", 400)}, &e); code != http.StatusBadRequest || e.Error.Code != "context_length_exceeded" || len(e.Tokens) != 0 {
		t.Fatalf("long prompt: %d %+v", code, e)
	}
	var fl streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/flush", "key-a", nil, &fl); code != 200 || tokenText(fl.Tokens) != "poison" {
		t.Fatalf("flush after the refused prompt: %d %+v", code, fl.Tokens)
	}

	// A prompt of exactly the room left before the response's end is
	// judged: it fits alone, not after that end.
	r = open()
	tok := guardhook.Tokenizer(m)
	words := 1
	for ; ; words++ {
		conv, err := tok.RenderConversation([]tokenizer.Message{{Role: "user", Content: strings.Repeat("word ", words)}})
		if err != nil {
			t.Fatal(err)
		}
		if n := r.State.Position + len(conv.Prompt()); n >= limit-1 {
			if n > limit {
				t.Skipf("no prompt length lands in the window (%d tokens with %d words)", n, words)
			}
			break
		}
	}
	e = errTokens{}
	if code, _ := h.do("POST", "/v1/streams/"+r.ID+"/prompt", "key-a", map[string]any{"prompt": strings.Repeat("word ", words)}, &e); code != http.StatusBadRequest || e.Error.Code != "context_length_exceeded" {
		t.Fatalf("prompt past the response's end: %d %+v", code, e)
	}
	if tokenText(e.Tokens) != "poison" || !e.Tokens[0].Flagged || e.Ended == nil || e.Ended.Status != "flagged" {
		t.Fatalf("the error lacks the verdicts of the response's end: %+v", e)
	}
}
