package tokenizer

import (
	"slices"
	"testing"
)

// Qwen3 ids of the scaffold (spec: <|im_start|> 151644, <|im_end|> 151645,
// <think> 151667, </think> 151668, user 872, assistant 77091, "\n" 198,
// "\n\n" 271). The canonical empty think block after "assistant\n" is
// <think> "\n\n" </think> "\n\n" = 151667, 271, 151668, 271.
const (
	specImStart  = 151644
	specImEnd    = 151645
	specThink    = 151667
	specThinkEnd = 151668
	specUser     = 872
	specAsst     = 77091
	specNL       = 198
	specNLNL     = 271
)

// TestNewlineOnlyReasoningLayout: an assistant turn whose reasoning is
// only newlines ("\n\n", as a reasoning parser returns for an empty think
// block) is laid out as the template writes it, '<think>\n' +
// reasoning.strip('\n') + '\n</think>\n\n': the empty think block, the ids
// of an answer with no reasoning, not a block of two "\n" tokens.
func TestNewlineOnlyReasoningLayout(t *testing.T) {
	tok := mustQwen3(t)
	for _, reasoning := range []string{"\n", "\n\n"} {
		msgs := []Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: "A", ReasoningContent: reasoning}}
		c, err := tok.RenderConversation(msgs)
		if err != nil {
			t.Fatal(err)
		}
		// The official rendering: <|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n
		want := []int{specImStart, specUser, specNL}
		want = append(want, tok.EncodeText("q")...)
		want = append(want, specImEnd, specNL, specImStart, specAsst, specNL, specThink, specNLNL, specThinkEnd, specNLNL)
		want = append(want, tok.EncodeText("A")...)
		want = append(want, specImEnd, specNL)
		if !slices.Equal(c.IDs, want) {
			t.Errorf("reasoning %q: RenderConversation ids\n %v\ntemplate ids\n %v\n(judged %v, Thinking %v)", reasoning, c.IDs, want, c.Judged(), c.Thinking)
		}
	}
}
