package guard

import (
	"context"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/redteam"
)

// TestRedTeamPositions feeds every injection string of the red-team set
// through Moderate at every surface, and through a stream — the prompt with
// JudgePrompt, the response and its reasoning as text cut into chunks of 1,
// 3 and 7 bytes, so that tags are split across chunks — and checks that the
// guard judges exactly the positions committed in testdata/redteam.
func TestRedTeamPositions(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	cases, want, err := redteam.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		for _, surface := range redteam.Surfaces {
			w := want[[2]string{c.ID, surface}]
			msgs := fromChat(redteam.Messages(surface, c.Text))
			r, err := m.Moderate(context.Background(), msgs, nil)
			if err != nil {
				t.Errorf("%s at %s: Moderate: %v", c.ID, surface, err)
				continue
			}
			if err := w.Check([]int{r.Prompt.Position}, judgedPositions(r.Tokens)); err != nil {
				t.Errorf("%s at %s (Moderate): %v", c.ID, surface, err)
			}
			for _, n := range []int{1, 3, 7} {
				p, got, err := streamConversation(m, msgs, n)
				if err != nil {
					t.Errorf("%s at %s, chunks of %d: %v", c.ID, surface, n, err)
					continue
				}
				if err := w.Check([]int{p}, got); err != nil {
					t.Errorf("%s at %s (stream, chunks of %d): %v", c.ID, surface, n, err)
				}
			}
		}
	}
}

func judgedPositions(tvs []TokenVerdict) []int {
	var out []int
	for _, tv := range tvs {
		out = append(out, tv.Position)
	}
	return out
}

// streamConversation judges msgs the way a gateway does: the prompt, then
// the response text in chunks of n bytes (reasoning first when there is
// some, closed with EndThinking).
func streamConversation(m *Model, msgs []Message, n int) (prompt int, judged []int, err error) {
	s := m.NewStream()
	defer s.Close()
	last := msgs[len(msgs)-1]
	pv, err := s.JudgePrompt(context.Background(), msgs[:len(msgs)-1])
	if err != nil {
		return 0, nil, err
	}
	feed := func(text string) error {
		for i := 0; i < len(text); i += n {
			tvs, err := s.AppendText(context.Background(), text[i:min(i+n, len(text))])
			if err != nil {
				return err
			}
			judged = append(judged, judgedPositions(tvs)...)
		}
		return nil
	}
	if last.ReasoningContent != "" {
		if err := s.StartResponse(true); err != nil {
			return 0, nil, err
		}
		if err := feed(strings.Trim(last.ReasoningContent, "\n")); err != nil {
			return 0, nil, err
		}
		tvs, err := s.EndThinking(context.Background())
		if err != nil {
			return 0, nil, err
		}
		judged = append(judged, judgedPositions(tvs)...)
	}
	if err := feed(strings.TrimLeft(last.Content, "\n")); err != nil {
		return 0, nil, err
	}
	tvs, err := s.EndResponse(context.Background())
	if err != nil {
		return 0, nil, err
	}
	return pv.Position, append(judged, judgedPositions(tvs)...), nil
}
