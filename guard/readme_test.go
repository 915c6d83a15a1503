package guard_test

import (
	"context"
	"fmt"
	"iter"
	"path/filepath"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/synth"
)

// The code between the README markers is the README's Go example, word for
// word (scripts/doc-check.sh compares them), so the README shows code that
// compiles and that TestReadmeExample runs.

// README begin

// moderate judges a user's prompt, then the answer an LLM streams for it,
// and stops the generation at the token where the answer is flagged.
func moderate(ctx context.Context, model, prompt string, llm iter.Seq[string]) error {
	// A model folder, or a hub id from the local cache (streamguard pull).
	m, err := guard.Load(ctx, model, guard.Options{
		Policy: guard.Policy{Mode: guard.Strict, Debounce: 2},
	})
	if err != nil {
		return err // an incomplete model is refused, naming what is wrong
	}
	defer m.Close()

	s := m.NewStream() // one per conversation; its KV cache grows with use
	defer s.Close()
	pv, err := s.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: prompt}})
	if err != nil {
		return err
	}
	fmt.Println("prompt:", pv.Risk, pv.Flagged) // Safe, Controversial or Unsafe

	for delta := range llm { // the answer's text as it is generated
		tvs, err := s.AppendText(ctx, delta) // a verdict per token now final
		if err != nil {
			return err
		}
		for _, tv := range tvs {
			fmt.Printf("%q %s %.2f\n", tv.Text, tv.Risk, tv.RiskProb) // and tv.Category

		}
		if i, flagged := s.Flagged(); flagged {
			fmt.Println("flagged at token", i, "- stop the generation")
			break
		}
	}
	if _, err := s.FlushText(ctx); err != nil { // the text's last tokens
		return err
	}
	d := s.Decision() // the official final rule over the whole answer
	fmt.Println("answer:", d.Risk, d.Category, d.Tokens, "tokens")

	// A conversation goes on in the same stream: close the answer, judge
	// the next user turn.
	if _, err := s.EndResponse(ctx); err != nil {
		return err
	}
	pv, err = s.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: "Thanks!"}})
	if err != nil {
		return err
	}
	fmt.Println("next prompt:", pv.Risk)
	return nil
}

// README end

func TestReadmeExample(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	answer := slices.Values([]string{"Knead the dough", " for ten minutes,", " then let it rise."})
	if err := moderate(context.Background(), dir, "How do I bake bread?", answer); err != nil {
		t.Fatal(err)
	}
	if err := moderate(context.Background(), filepath.Join(dir, "missing"), "hi", answer); err == nil {
		t.Error("a missing model folder loaded")
	}
}
