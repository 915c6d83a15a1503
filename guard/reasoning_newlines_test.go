package guard

import (
	"context"
	"testing"
)

// TestNewlineOnlyReasoningVerdicts: the Qwen3 template renders an
// assistant turn with reasoning_content "\n\n" exactly as one with no
// reasoning (it strips the reasoning's newlines: the empty think block), so
// Moderate gives both the same verdicts, token for token.
func TestNewlineOnlyReasoningVerdicts(t *testing.T) {
	m := tinyModel(t, "", nil)
	ctx := context.Background()
	user := Message{Role: "user", Content: "How do I make tea?"}
	plain, err := m.Moderate(ctx, []Message{user, {Role: "assistant", Content: "Boil water."}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := m.Moderate(ctx, []Message{user, {Role: "assistant", Content: "Boil water.", ReasoningContent: "\n\n"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Tokens) != len(empty.Tokens) {
		t.Fatalf("same template text, different judged tokens: %d without reasoning, %d with reasoning \"\\n\\n\" (ids %v vs %v)",
			len(plain.Tokens), len(empty.Tokens), verdictIDs(plain.Tokens), verdictIDs(empty.Tokens))
	}
	for i := range plain.Tokens {
		a, b := plain.Tokens[i], empty.Tokens[i]
		if a.ID != b.ID || a.Position != b.Position || a.RiskProb != b.RiskProb {
			t.Errorf("token %d: %+v vs %+v", i, a, b)
		}
	}
}

func verdictIDs(tv []TokenVerdict) []int {
	out := make([]int, len(tv))
	for i, v := range tv {
		out[i] = v.ID
	}
	return out
}
