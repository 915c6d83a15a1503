package guard

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// stopAfter is a context whose Err turns to context.Canceled after n
// checks: cancellation at a known point, with no timing involved.
type stopAfter struct {
	context.Context
	n int
}

func (c *stopAfter) Err() error {
	if c.n <= 0 {
		return context.Canceled
	}
	c.n--
	return nil
}

// A cancelled context stops a long prefill between chunks; the stream stays
// usable and, resumed, gives the verdict an uncancelled one gives.
func TestCancelStopsPrefillBetweenChunks(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	defer func(n int) { prefillChunk = n }(prefillChunk)
	prefillChunk = 16
	msgs := []Message{{Role: "user", Content: strings.Repeat("a long question about bread and ovens ", 20)}}

	want := m.NewStream()
	defer want.Close()
	wantPV, err := want.JudgePrompt(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	total := want.Len()
	if total <= 4*prefillChunk {
		t.Fatalf("prompt of %d tokens is too short for the test", total)
	}

	s := m.NewStream()
	defer s.Close()
	pv, err := s.JudgePrompt(&stopAfter{Context: context.Background(), n: 2}, msgs)
	if !errors.Is(err, context.Canceled) || pv != nil {
		t.Fatalf("JudgePrompt with a cancelled context: %v, %v; want context.Canceled", pv, err)
	}
	if s.Len() != 2*prefillChunk || s.Len()+s.Pending() != total {
		t.Fatalf("after cancellation: %d fed, %d pending; want %d fed of %d", s.Len(), s.Pending(), 2*prefillChunk, total)
	}
	if s.LastPrompt() != nil {
		t.Fatal("a prompt verdict before the prompt's end was fed")
	}

	// Usable: the next call feeds what is queued first.
	tvs, err := s.AppendText(context.Background(), "Knead it.")
	if err != nil {
		t.Fatal(err)
	}
	got := s.LastPrompt()
	if got == nil || got.Position != wantPV.Position || !bitsEqual(got.RiskProbs, wantPV.RiskProbs) {
		t.Fatalf("resumed prompt verdict %+v, want %+v", got, wantPV)
	}
	wantTVs, err := want.AppendText(context.Background(), "Knead it.")
	if err != nil {
		t.Fatal(err)
	}
	sameVerdicts(t, "resumed response", tvs, wantTVs)

	// Step and Moderate check ctx before the forward too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Step(ctx, []*Stream{s}, StepOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Step: %v, want context.Canceled", err)
	}
	if _, err := m.Moderate(ctx, msgs, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Moderate: %v, want context.Canceled", err)
	}
}
