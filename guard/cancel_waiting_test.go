package guard

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// longText is text of a few thousand tokens: a synchronous call feeding it
// holds the stream's turn for many forwards.
func longText(words int) string {
	return strings.Repeat("lorem ipsum dolor sit amet ", words/5)
}

// waitQueued waits until s has queued tokens (the call holding the turn
// has queued its input).
func waitQueued(t *testing.T, s *Stream) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.Pending() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the call holding the turn queued nothing")
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// TestJudgePromptDoneContextTakesInput: a JudgePrompt whose context is
// done before it begins takes its prompt (doc.go, Cancellation), so a
// prompt with other messages is then refused until it is finished.
// Stream.enter once chose at random between the free turn and ctx.Done():
// of 64 such calls 19 took nothing, and a different prompt was accepted,
// the first never judged.
func TestJudgePromptDoneContextTakesInput(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	other := []Message{{Role: "user", Content: "A different question"}}
	for try := range 64 {
		s := m.NewStream()
		if _, err := s.JudgePrompt(done, userMsg); !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotTaken) {
			t.Fatalf("JudgePrompt on a cancelled context: %v; want context.Canceled, input taken", err)
		}
		if s.Pending() == 0 {
			t.Fatalf("try %d: JudgePrompt on a done context took nothing", try)
		}
		if _, err := s.JudgePrompt(context.Background(), other); err == nil {
			t.Fatalf("try %d: a prompt with other messages accepted before the cancelled one was finished", try)
		}
		s.Close()
	}
}

// TestWaitingCallTakesNothing: a call whose context ends while another
// call holds the stream takes nothing and says so (ErrNotTaken), so the
// running call returns only its own verdicts and no text goes unreturned.
// Its input was once queued behind the running call, which fed it: an
// AppendText behind a JudgePrompt had its verdicts returned by no call,
// and one behind another AppendText had them returned by that call.
func TestWaitingCallTakesNothing(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	const other = "zebra quokka narwhal "
	for try := 0; try < 5; try++ {
		s := m.NewStream()
		ch := make(chan error, 1)
		go func() {
			_, err := s.JudgePrompt(context.Background(), []Message{{Role: "user", Content: longText(3000)}})
			ch <- err
		}()
		waitQueued(t, s)
		got, err := s.AppendText(done, other)
		if perr := <-ch; perr != nil {
			t.Fatal(perr)
		}
		if !errors.Is(err, ErrNotTaken) {
			// The prompt was judged before the call waited: it took its
			// input as any cancelled call does; try again.
			s.Close()
			continue
		}
		if !errors.Is(err, context.Canceled) || len(got) != 0 || s.Pending() != 0 {
			t.Fatalf("a call cancelled while waiting: %v, %d verdicts, %d tokens queued; want ErrNotTaken and context.Canceled, nothing taken", err, len(got), s.Pending())
		}
		tvs, err := s.AppendText(context.Background(), other) // sent again
		if err != nil {
			t.Fatal(err)
		}
		ftvs, err := s.FlushText(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if judged, returned := s.Decision().Tokens, len(tvs)+len(ftvs); judged != returned {
			t.Fatalf("%d response tokens judged, %d verdicts returned", judged, returned)
		}
		s.Close()
		return
	}
	t.Skip("the prompt was always judged before the second call waited (a fast machine): the interleaving did not happen in 5 tries")
}

// TestQueueEndResponseTwiceRefused: QueueEndResponse on a response
// already ended is refused whether or not a Step fed the turn end (only
// EndResponse called again after a cancelled one feeds a queued tail).
func TestQueueEndResponseTwiceRefused(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueText("An answer."); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueEndResponse(); err != nil {
		t.Fatal(err)
	}
	before := s.QueueEndResponse() // no Step yet
	if _, err := m.Step(ctx, []*Stream{s}, StepOptions{}); err != nil {
		t.Fatal(err)
	}
	after := s.QueueEndResponse()
	if (before == nil) != (after == nil) {
		t.Fatalf("QueueEndResponse a second time: %v before the Step, %v after it", before, after)
	}
}

// TestStepOddStreams: Step with a zero Stream, a stream of another
// model, a closed stream, duplicates and nil: an error, no panic, and the
// valid stream stays usable.
func TestStepOddStreams(t *testing.T) {
	m := tinyModel(t, "misuse", nil)
	m2 := tinyModel(t, "misuse-other", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if err := s.QueuePrompt(userMsg); err != nil {
		t.Fatal(err)
	}
	closed := m.NewStream()
	closed.Close()
	o := m2.NewStream()
	defer o.Close()
	for _, list := range [][]*Stream{
		{s, {}}, {s, o}, {s, s, nil}, {s, closed, nil}, {nil, s, s},
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("Step panicked: %v", p)
				}
			}()
			if _, err := m.Step(ctx, list, StepOptions{}); err == nil {
				t.Errorf("Step(%d streams) accepted", len(list))
			}
		}()
	}
	if _, err := s.AppendText(ctx, "hello"); err != nil {
		t.Errorf("stream unusable after refused steps: %v", err)
	}
}
