package train

import (
	"context"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestRenderMatchesModerate: the positions the trainer reads are the ones
// guard.Model.Moderate judges, for every shape of conversation it takes.
func TestRenderMatchesModerate(t *testing.T) {
	m, err := guard.Load(context.Background(), tinyModel(t, "bf16"), guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u := func(s string) tokenizer.Message { return tokenizer.Message{Role: "user", Content: s} }
	a := func(s string) tokenizer.Message { return tokenizer.Message{Role: "assistant", Content: s} }
	cases := [][]tokenizer.Message{
		{u("how do I bake bread")},
		{u("hi"), a("Hello! How can I help?")},
		{{Role: "system", Content: "be brief"}, u("hi"), a("Hello")},
		{u("first"), a("one"), u("second question"), a("two words")},
		{u("think about it"), a("<think>\nlet me see\n</think>\n\nThe answer is 4.")},
		{u("reason"), {Role: "assistant", Content: "Done.", ReasoningContent: "step by step"}},
		{u("empty answer"), a("")},
		{u("newlines"), a("\n\nleading newlines")},
	}
	for i, msgs := range cases {
		c, err := Render(guardhook.Tokenizer(m), msgs)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		res, err := m.Moderate(context.Background(), guardhook.Messages[guard.Message](msgs), nil)
		if err != nil {
			t.Fatalf("case %d: Moderate: %v", i, err)
		}
		if res.Prompt.Position != c.PromptPos {
			t.Errorf("case %d: prompt position %d, Moderate's %d", i, c.PromptPos, res.Prompt.Position)
		}
		var judged []int
		for _, tv := range res.Tokens {
			judged = append(judged, tv.Position)
		}
		if !slices.Equal(judged, c.ResponsePos) {
			t.Errorf("case %d: response positions %v, Moderate's %v", i, c.ResponsePos, judged)
		}
		last := c.PromptPos
		if len(c.ResponsePos) > 0 {
			last = c.ResponsePos[len(c.ResponsePos)-1]
		}
		if len(c.IDs) != last+1 {
			t.Errorf("case %d: %d ids fed, want through position %d", i, len(c.IDs), last)
		}
	}
}
