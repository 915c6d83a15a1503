package guard

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard/guardtest"
	"github.com/streamguard/streamguard/internal/kernels"
)

// TestStepNilStreamRefused: a nil *Stream in Step's slice is an error, as
// a stream of another model or one listed twice is (it was a nil pointer
// dereference).
func TestStepNilStreamRefused(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	var p any
	func() {
		defer func() { p = recover() }()
		_, err := m.Step(context.Background(), []*Stream{nil}, StepOptions{})
		t.Logf("Step([nil]) error: %v", err)
	}()
	if p != nil {
		t.Fatalf("Model.Step with a nil stream in the slice panicked: %v", p)
	}
	if _, err := m.Step(context.Background(), []*Stream{nil}, StepOptions{}); err == nil || !strings.Contains(err.Error(), "stream 0 is nil") {
		t.Errorf("Step([nil]): %v; want \"stream 0 is nil\"", err)
	}
}

// TestStepNilStreamLeavesOthersUsable: a stream listed before a nil one
// takes no part in the refused step and stays usable (when Step panicked
// there, the stream was left marked as in a step for good: every later
// Step and synchronous call refused it, and Close never released its
// cache).
func TestStepNilStreamLeavesOthersUsable(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if err := s.QueuePrompt(userMsg); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		m.Step(ctx, []*Stream{s, nil}, StepOptions{})
	}()
	if _, err := m.Step(ctx, []*Stream{s}, StepOptions{}); err != nil {
		t.Errorf("Step on the stream after a failed Step([s, nil]): %v", err)
	}
	if _, err := s.AppendText(ctx, "hello"); err != nil {
		t.Errorf("AppendText on the stream after a failed Step([s, nil]): %v", err)
	}
}

// TestCancelledAppendTextTakesInput: a cancelled call's input is taken
// (doc.go, Cancellation: do not send the same text again), also when its
// context was done before the call began. Stream.enter chooses at random
// between the call's turn and ctx.Done(), and about half of such calls
// once returned without taking the text, which a caller following the
// documentation never sent again. 64 tries: the old behaviour passes all
// with probability 2^-64.
func TestCancelledAppendTextTakesInput(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	const text = "Hello there friend"
	for try := 0; try < 64; try++ {
		s := m.NewStream()
		if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendText(done, text); !errors.Is(err, context.Canceled) {
			t.Fatalf("AppendText on a cancelled context: %v", err)
		}
		// As documented, do not resend the text: the next call feeds it.
		tvs, err := s.FlushText(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var judged strings.Builder
		for _, tv := range tvs {
			judged.WriteString(tv.Text)
		}
		s.Close()
		if !strings.Contains(judged.String(), text) {
			t.Fatalf("try %d: AppendText returned context.Canceled without taking its text; the next call judged %q, not %q", try, judged.String(), text)
		}
	}
}

// TestCancelledEndResponseRetried: after an EndResponse whose context was
// cancelled (its input taken: the response's last tokens and the turn end
// queued), EndResponse again feeds them (it failed with "no open response
// to end" and left the response's tail unjudged).
func TestCancelledEndResponseRetried(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for try := 0; try < 64; try++ {
		s := m.NewStream()
		if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendText(context.Background(), "Some answer text"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.EndResponse(done); !errors.Is(err, context.Canceled) {
			t.Fatalf("EndResponse on a cancelled context: %v", err)
		}
		if s.Pending() == 0 {
			t.Fatalf("try %d: a cancelled EndResponse took nothing", try)
		}
		pending := s.Pending()
		_, err := s.EndResponse(context.Background())
		if err != nil || s.Pending() != 0 {
			t.Fatalf("EndResponse retried after a cancelled one: error %v, %d of %d tokens still queued, Decision covers %d tokens",
				err, s.Pending(), pending, s.Decision().Tokens)
		}
		s.Close()
	}
}

// TestThreadsBounded: Options.Threads sizes per-thread scratch memory of
// every forward (Threads: 1<<22 once made the first JudgePrompt on a
// 2-layer model allocate 586 MB); Load refuses a count out of 0..1024.
func TestThreadsBounded(t *testing.T) {
	defer kernels.SetThreads(runtime.GOMAXPROCS(0)) // process-wide: restore
	dir := guardtest.ModelDir(t, guardtest.Options{})
	for _, n := range []int{-1, kernels.MaxThreads + 1, 1 << 22} {
		m, err := Load(context.Background(), dir, Options{Threads: n})
		if err == nil {
			m.Close()
			t.Errorf("Options{Threads: %d}: loaded; want an error", n)
		} else if !strings.Contains(err.Error(), "Options.Threads") {
			t.Errorf("Options{Threads: %d}: %v; want it to name Options.Threads", n, err)
		}
	}
}
