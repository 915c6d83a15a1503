package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// Qwen3 ids of the scaffold (the model card: <|im_start|> 151644, <|im_end|> 151645,
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

// TestReasoningKeptBeforeToolResponseTurn: a user message written as a
// tool result is not the template's last query, so the assistant turn
// before it keeps its think block. The expected text is the Qwen3
// template's rendering (@huggingface/jinja, add_generation_prompt false).
func TestReasoningKeptBeforeToolResponseTurn(t *testing.T) {
	tok := mustQwen3(t)
	msgs := []Message{
		{Role: "user", Content: "hello"},
		{Role: "assistant", Content: "ok", ReasoningContent: "R"},
		{Role: "user", Content: "<tool_response>\nresult\n</tool_response>"},
	}
	c, err := tok.RenderConversation(msgs)
	if err != nil {
		t.Fatal(err)
	}
	const want = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\nok<|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\nresult\n</tool_response><|im_end|>"
	if got := tok.Decode(c.IDs, false); got != want {
		t.Errorf("layout\n%q\nwant\n%q", got, want)
	}
	// A query after it drops the reasoning again, as the template does.
	c, err = tok.RenderConversation(append(msgs[:2:2], Message{Role: "user", Content: "and now?"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Decode(c.IDs, false); strings.Contains(got, "<think>") {
		t.Errorf("a later query kept the reasoning: %q", got)
	}
}
