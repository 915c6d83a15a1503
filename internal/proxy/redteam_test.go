package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/redteam"
)

// recordingModerator records the positions its streams judge.
type recordingModerator struct {
	Moderator
	mu     sync.Mutex
	prompt []int
	judged []int
}

func (r *recordingModerator) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := r.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return &recordingStream{Stream: s, r: r}, nil
}

func (r *recordingModerator) take() (prompt, judged []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prompt, judged = r.prompt, r.judged
	r.prompt, r.judged = nil, nil
	return prompt, judged
}

type recordingStream struct {
	Stream
	r *recordingModerator
}

func (s *recordingStream) JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error) {
	pv, err := s.Stream.JudgePrompt(ctx, msgs)
	if pv != nil {
		s.r.mu.Lock()
		s.r.prompt = append(s.r.prompt, pv.Position)
		s.r.mu.Unlock()
	}
	return pv, err
}

func (s *recordingStream) record(tvs []guard.TokenVerdict, err error) ([]guard.TokenVerdict, error) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	for _, t := range tvs {
		s.r.judged = append(s.r.judged, t.Position)
	}
	return tvs, err
}

func (s *recordingStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	return s.record(s.Stream.AppendText(ctx, text))
}

func (s *recordingStream) EndThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.record(s.Stream.EndThinking(ctx))
}

func (s *recordingStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.record(s.Stream.StartToolCall(ctx))
}

func (s *recordingStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.record(s.Stream.EndToolCall(ctx))
}

func (s *recordingStream) FlushText(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.record(s.Stream.FlushText(ctx))
}

// TestRedTeamPositions sends every injection string of the red-team set
// through the proxy: in the request's messages (user, system and earlier
// assistant turns), and in the upstream's streamed answer and reasoning,
// cut into 3-character deltas so that tags are split across events. The
// proxy must judge exactly the positions committed in testdata/redteam.
func TestRedTeamPositions(t *testing.T) {
	m := tinyModel(t)
	cases, want, err := redteam.Load()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingModerator{Moderator: Direct(m)}
	for _, c := range cases {
		for _, surface := range redteam.Surfaces {
			w := want[[2]string{c.ID, surface}]
			msgs := redteam.Messages(surface, c.Text)
			last := msgs[len(msgs)-1]
			spec := upstreamSpec{Content: splitRunes(last.Content, 3)}
			if last.ReasoningContent != "" {
				spec.Reasoning = splitRunes(last.ReasoningContent, 3)
			}
			up := newFakeUpstream(t, spec)
			p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
			body, err := json.Marshal(map[string]any{"model": "fake-llm", "stream": true, "messages": msgs[:len(msgs)-1]})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			what := c.ID + " at " + surface
			if resp.StatusCode != 200 || !strings.Contains(string(out), "data: [DONE]") {
				t.Fatalf("%s: status %d, body %q", what, resp.StatusCode, out)
			}
			p.wait(t, 1)
			if err := w.Check(rec.take()); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}
}
