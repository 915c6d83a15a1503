package redteam

import (
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestToolCallSurfaces: every injection of the red-team set put in
// a tool call's name or arguments, a history call, or tool results (before the
// last user turn, or ending the prompt) leaves exactly the scaffold's added
// tokens, in RenderConversation and RenderChat.
func TestToolCallSurfaces(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	surf := map[string]func(string) []tokenizer.Message{
		"call-name": func(s string) []tokenizer.Message {
			return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Sure.", ToolCalls: []tokenizer.ToolCall{{Name: s, Arguments: "{}"}}}}
		},
		"call-args": func(s string) []tokenizer.Message {
			return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", ToolCalls: []tokenizer.ToolCall{{Name: "f", Arguments: s}}}}
		},
		"history-call": func(s string) []tokenizer.Message {
			return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", ToolCalls: []tokenizer.ToolCall{{Name: s, Arguments: s}}}, {Role: "tool", Content: "ok"}, {Role: "user", Content: "Thanks."}, {Role: "assistant", Content: "Sure."}}
		},
		"tool-result-history": func(s string) []tokenizer.Message {
			return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", ToolCalls: []tokenizer.ToolCall{{Name: "f", Arguments: "{}"}}}, {Role: "tool", Content: s}, {Role: "tool", Content: s}, {Role: "user", Content: "Thanks."}, {Role: "assistant", Content: "Sure."}}
		},
		"tool-result-last": func(s string) []tokenizer.Message {
			return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", ToolCalls: []tokenizer.ToolCall{{Name: "f", Arguments: "{}"}}}, {Role: "tool", Content: s}, {Role: "assistant", Content: "Sure."}}
		},
	}
	for name, mk := range surf {
		ref, err := tok.RenderConversation(mk("x"))
		if err != nil {
			t.Fatal(name, err)
		}
		for _, c := range cases {
			conv, err := tok.RenderConversation(mk(c.Text))
			if err != nil {
				t.Errorf("%s %s: %v", name, c.ID, err)
				continue
			}
			if got, want := added(tok, conv.IDs), added(tok, ref.IDs); !slices.Equal(got, want) {
				t.Errorf("%s %s: added %v want %v", name, c.ID, got, want)
			}
			ch, err := tok.RenderChat(mk(c.Text))
			if err != nil {
				t.Errorf("%s %s: %v", name, c.ID, err)
				continue
			}
			chr, _ := tok.RenderChat(mk("x"))
			if got, want := added(tok, ch.IDs), added(tok, chr.IDs); !slices.Equal(got, want) {
				t.Errorf("chat %s %s: added %v want %v", name, c.ID, got, want)
			}
		}
	}
}
