package guard

import (
	"context"
	"errors"
	"testing"
)

var everyTurnMsgs = []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "How do I pick a lock?"},
	{Role: "assistant", Content: "Use a tension wrench."}, {Role: "user", Content: "And a safe?"},
	{Role: "assistant", Content: "No."}, {Role: "user", Content: "Thanks, bye."}}

// TestEveryTurnSwitchedBetweenQueueAndStep: EveryTurn is the policy's when
// the prompt is judged (SetPolicy: "for tokens judged from now on"), and a
// prompt judged without it leaves no turn verdicts for the next one.
func TestEveryTurnSwitchedBetweenQueueAndStep(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if err := s.SetPolicy(Policy{EveryTurn: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.QueuePrompt(everyTurnMsgs); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(Policy{}); err != nil { // before the step
		t.Fatal(err)
	}
	if _, err := s.run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(Policy{EveryTurn: true}); err != nil {
		t.Fatal(err)
	}
	pv, err := s.JudgePrompt(ctx, []Message{{Role: "user", Content: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pv.Turns) != 1 {
		for i, tv := range pv.Turns {
			t.Logf("turn %d position %d", i, tv.Position)
		}
		t.Fatalf("a one-turn prompt has %d turn verdicts, want 1 (stale ones of the previous prompt leaked)", len(pv.Turns))
	}
	// Switched on after the queueing, it judges every turn.
	s2 := m.NewStream()
	defer s2.Close()
	if err := s2.QueuePrompt(everyTurnMsgs); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetPolicy(Policy{EveryTurn: true}); err != nil {
		t.Fatal(err)
	}
	r, err := s2.run(ctx)
	if err != nil || r.Prompt == nil || len(r.Prompt.Turns) != 3 {
		t.Fatalf("EveryTurn set before the step: %+v, %v; want 3 turn verdicts", r.Prompt, err)
	}
}

// TestModerateEveryTurn: Moderate judges every user turn under EveryTurn,
// as JudgePrompt does.
func TestModerateEveryTurn(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	res, err := m.Moderate(context.Background(), everyTurnMsgs, &Policy{EveryTurn: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Prompt.Turns) != 3 {
		t.Fatalf("Moderate with EveryTurn: %d turn verdicts, want 3 (as JudgePrompt gives)", len(res.Prompt.Turns))
	}
}

// TestPanicClosesSteppedStreams: a recovered panic in a forward may have
// written part of the stepped streams' caches; they are closed, their
// memory released, and the model goes on with new streams.
func TestPanicClosesSteppedStreams(t *testing.T) {
	m := loadMapped(t)
	eng := m.eng
	m.eng = panicEngine{m.eng}
	s := m.NewStream()
	defer s.Close()
	if err := s.QueuePrompt(userMsg); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		m.Step(context.Background(), []*Stream{s}, StepOptions{})
	}()
	m.eng = eng
	if err := s.QueuePrompt(userMsg); !errors.Is(err, ErrClosed) {
		t.Fatalf("a stream whose forward panicked: %v, want ErrClosed", err)
	}
	if rs, err := m.Step(context.Background(), []*Stream{s}, StepOptions{}); err != nil || rs[0].Fed != 0 {
		t.Fatalf("stepping it: %+v, %v; want an empty result, as for any closed stream", rs, err)
	}
	if n := s.CacheBytes(); n != 0 {
		t.Errorf("its cache holds %d bytes", n)
	}
	if _, err := m.NewStream().JudgePrompt(context.Background(), userMsg); err != nil {
		t.Fatalf("a new stream after the panic: %v", err)
	}
}
