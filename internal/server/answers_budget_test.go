package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestLiteLLMResponseArgumentsDecoded: LiteLLM's post-call hook
// (input_type "response") hands streamguard an answer's tool calls, which
// an agent runs once its JSON parser decoded them: they are judged with
// their \uXXXX escapes decoded, as the proxy judges them
// ("\u0045\u0056\u0049\u004c" is EVIL; a server whose parser writes
// ensure_ascii=True sends every non-ASCII character so).
func TestLiteLLMResponseArgumentsDecoded(t *testing.T) {
	body := `{"input_type":"response","texts":["Sure."],` +
		`"tool_calls":[{"id":"c","type":"function","function":{"name":"write","arguments":"{\"text\": \"\\u0045\\u0056\\u0049\\u004c \\u4f60\\u597d\"}"}}],` +
		`"structured_messages":[{"role":"user","content":"Hi"}]}`
	var req litellmRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	convs, _, _, err := litellmConversations(&req)
	if err != nil {
		t.Fatal(err)
	}
	var judged strings.Builder
	for _, c := range convs {
		for _, m := range c {
			judged.WriteString(m.Content + "\n")
		}
	}
	if !strings.Contains(judged.String(), "EVIL") || !strings.Contains(judged.String(), "你好") {
		t.Errorf("the agent runs {\"text\": \"EVIL 你好\"}; the response hook judges\n%q", judged.String())
	}
}

// TestModerationsResponseArgumentsDecoded: the same in /v1/moderations,
// whose assistant turn after the last user turn is judged as the response
// (an answer an agent acts on): its tool calls' arguments are read decoded.
func TestModerationsResponseArgumentsDecoded(t *testing.T) {
	conv := `{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"write","arguments":"{\"text\": \"\\u0045\\u0056\\u0049\\u004c\"}"}}]}]}`
	in, err := parseConversation(json.RawMessage(conv))
	if err != nil {
		t.Fatal(err)
	}
	last := in.msgs[len(in.msgs)-1]
	if last.Role != "assistant" || !strings.Contains(last.Content, "EVIL") {
		t.Errorf("the response judged is %q (%s); the agent runs {\"text\": \"EVIL\"}", last.Content, last.Role)
	}
}

// TestAppendWithinReserveFitsCJK: an append within the stream's reserve
// fits in other scripts too: 63 CJK characters (189 bytes, fewer tokens)
// with a reserve of 256 and the budget otherwise full. The charge is
// NFD's length (what NFC can at most reach, each id at least a byte of
// it), 3 a CJK character; three positions a byte, 9 a character, refused.
func TestAppendWithinReserveFitsCJK(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	h := newHarness(t, Options{Config: twoTenants(nil), KVBudgetBytes: 4096 * bpp, StreamReserveTokens: 256, KVBudgetWait: -1})
	var sa streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &sa); code != 201 {
		t.Fatalf("open: status %d", code)
	}
	used, limit := h.srv.budget.usage()
	h.srv.budget.forceAcquire(limit - used)
	defer h.srv.budget.release(limit - used)

	text := strings.Repeat("今天天气很好。", 9) // 63 characters, 189 bytes
	tk, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	ids := len(tk.EncodeText(text))
	var e errBody
	code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"text": text}, &e)
	if code != 200 {
		t.Fatalf("an append of %d CJK characters (%d bytes, %d tokens; charged MaxIDs %d) to a stream at position %d with a reserve of 256 tokens: status %d %+v",
			len([]rune(text)), len(text), ids, tokenizer.MaxIDs(text), sa.State.Position, code, e.Error)
	}
}
