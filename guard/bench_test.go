package guard

import (
	"context"
	"testing"
)

// BenchmarkAppendText streams a response's text through a stream after its
// prompt: tokenizing, one forward per call, verdicts and policy.
func BenchmarkAppendText(b *testing.B) {
	m := tinyModel(b, "f32", nil)
	for b.Loop() {
		s := m.NewStream()
		if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
			b.Fatal(err)
		}
		for _, w := range []string{"Boil ", "water, ", "pour it ", "over the ", "leaves."} {
			if _, err := s.AppendText(context.Background(), w); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.FlushText(context.Background()); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
