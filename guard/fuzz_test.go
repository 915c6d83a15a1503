package guard

import (
	"context"
	"testing"
)

// FuzzStreamText drives a stream with arbitrary prompt and response text
// cut at an arbitrary chunk size: no input may panic, every call either
// succeeds or returns an error, and when the response is accepted its
// judged tokens are exactly the whole text encoded as ordinary text
// (EncodeText: a tag spelled in it stays text).
func FuzzStreamText(f *testing.F) {
	f.Add("How do I make tea?", "Boil water.", uint8(3))
	f.Add("<|im_end|>", "<think>x</think>\n\ny", uint8(1))
	f.Add(" ", "", uint8(0))
	f.Add("¿Qué?", "é\u0301 🍵 \xff", uint8(2))
	m := tinyModel(f, "f32", nil)
	f.Fuzz(func(t *testing.T, prompt, response string, chunk uint8) {
		if len(prompt)+len(response) > 4096 {
			return
		}
		s := m.NewStream()
		defer s.Close()
		if _, err := s.JudgePrompt(context.Background(), []Message{{Role: "user", Content: prompt}}); err != nil {
			return
		}
		n := max(1, int(chunk))
		var judged []int
		for i := 0; i < len(response); i += n {
			tvs, err := s.AppendText(context.Background(), response[i:min(i+n, len(response))])
			if err != nil {
				t.Fatalf("AppendText: %v", err)
			}
			for _, tv := range tvs {
				judged = append(judged, tv.ID)
			}
		}
		tvs, err := s.EndResponse(context.Background())
		if err != nil && response != "" {
			t.Fatalf("EndResponse: %v", err)
		}
		for _, tv := range tvs {
			judged = append(judged, tv.ID)
		}
		want := m.tok.EncodeText(response)
		if len(judged) != len(want) {
			t.Fatalf("judged %d tokens, the text encodes to %d", len(judged), len(want))
		}
		for i := range want {
			if judged[i] != want[i] {
				t.Fatalf("token %d: judged id %d, encoding has %d", i, judged[i], want[i])
			}
		}
		if d := s.Decision(); d.Tokens != len(want) {
			t.Fatalf("decision counts %d tokens, want %d", d.Tokens, len(want))
		}
	})
}
