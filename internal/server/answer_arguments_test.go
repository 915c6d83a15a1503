package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/chatmsg"
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
			judged.WriteString(chatmsg.WithCalls(m) + "\n")
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
	if last.Role != "assistant" || !strings.Contains(chatmsg.WithCalls(last), "EVIL") {
		t.Errorf("the response judged is %q (%s); the agent runs {\"text\": \"EVIL\"}", last.Content, last.Role)
	}
}
