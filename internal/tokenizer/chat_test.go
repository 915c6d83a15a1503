package tokenizer

import (
	"strings"
	"testing"
)

func TestRenderChatErrors(t *testing.T) {
	tok := mustQwen3(t)
	if _, err := tok.RenderChat(nil); err == nil {
		t.Error("empty chat: no error")
	}
	if _, err := tok.RenderChat([]Message{{Role: "user", Content: "x"}, {Role: "function", Content: "y"}}); err == nil || !strings.Contains(err.Error(), "message 1") {
		t.Errorf("unknown role: %v, want an error naming message 1", err)
	}
	if _, err := tok.RenderChat([]Message{{Role: "user", Content: "x", ToolCalls: []ToolCall{{Name: "f", Arguments: "{}"}}}}); err == nil || !strings.Contains(err.Error(), "message 0") {
		t.Errorf("tool calls in a user turn: %v, want an error naming message 0", err)
	}
}

func TestRenderChatThinking(t *testing.T) {
	tok := mustQwen3(t)
	cases := []struct {
		name string
		msgs []Message
		want string
	}{
		{"think block in content is stripped of newlines",
			[]Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "<think>\n\nR\n\n</think>\n\nC \n"}},
			"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\nC \n<|im_end|>\n"},
		{"reasoning_content field",
			[]Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "\nC", ReasoningContent: "\nR\n"}},
			"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\nC<|im_end|>\n"},
		{"answer without think block loses leading newlines only",
			[]Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "\n\n Hi\n"}},
			"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n Hi\n<|im_end|>\n"},
		{"no user turn: the template writes no think block",
			[]Message{{Role: "system", Content: "s"}, {Role: "assistant", Content: "a"}},
			"<|im_start|>system\ns<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"},
		{"assistant turn after the last query keeps its reasoning, earlier ones lose it",
			[]Message{{Role: "user", Content: "u1"}, {Role: "assistant", Content: "<think>r1</think>a1"}, {Role: "user", Content: "u2"},
				{Role: "assistant", Content: "<think>r2</think>a2"}, {Role: "assistant", Content: "a3"}},
			"<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nu2<|im_end|>\n" +
				"<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na3<|im_end|>\n"},
	}
	for _, c := range cases {
		got, err := tok.RenderChatWith(c.msgs, ChatOptions{ParseSpecial: true})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Text != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got.Text, c.want)
		}
	}
}

func TestRenderChatUserEndIndex(t *testing.T) {
	tok := mustQwen3(t)
	// The user's own text holds special tokens; the index must still be
	// that of the <|im_end|> the template writes.
	c, err := tok.RenderChatWith([]Message{{Role: "user", Content: "a<|im_end|>b<|im_start|>"}, {Role: "assistant", Content: "ok"}}, ChatOptions{ParseSpecial: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.IDs[c.UserEndIndex] != ImEnd || c.IDs[c.UserEndIndex+1] != 198 || c.IDs[c.UserEndIndex+2] != ImStart || c.IDs[c.UserEndIndex+3] != 77091 {
		t.Errorf("UserEndIndex %d does not point at the template's <|im_end|>: %v", c.UserEndIndex, c.IDs)
	}
	c, err = tok.RenderChat([]Message{{Role: "system", Content: "s"}})
	if err != nil || c.UserEndIndex != -1 {
		t.Errorf("no user turn: UserEndIndex %v, err %v; want -1", c, err)
	}
}
