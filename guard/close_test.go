package guard

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// loadMapped loads the tiny preset from a folder, so that its weights are
// memory-mapped, as a real model's are: a forward after Close would read
// unmapped memory (a fault that no recover catches).
func loadMapped(t *testing.T) *Model {
	t.Helper()
	m, err := Load(context.Background(), writeTinyFolder(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestModelUsedAfterClose: after Close, a stream opened before it and one
// opened after it fail with ErrModelClosed in every call that would queue
// or run the model, instead of reading the unmapped weights; the calls that
// do not run it still work, and Close is idempotent.
func TestModelUsedAfterClose(t *testing.T) {
	ctx := context.Background()
	m := loadMapped(t)
	old := m.NewStream()
	if _, err := old.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if _, err := old.AppendText(ctx, "Boil the "); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := m.NewStream()
	calls := map[string]func() error{
		"new stream JudgePrompt": func() error { _, err := fresh.JudgePrompt(ctx, userMsg); return err },
		"new stream QueuePrompt": func() error { return fresh.QueuePrompt(userMsg) },
		"old stream AppendText":  func() error { _, err := old.AppendText(ctx, "water, then "); return err },
		"old stream AppendIDs":   func() error { _, err := old.AppendIDs(ctx, []int{1}); return err },
		"old stream FlushText":   func() error { _, err := old.FlushText(ctx); return err },
		"old stream EndResponse": func() error { _, err := old.EndResponse(ctx); return err },
		"old stream JudgePrompt": func() error { _, err := old.JudgePrompt(ctx, userMsg); return err },
		"old stream QueueText":   func() error { return old.QueueText("more") },
		"Step":                   func() error { _, err := m.Step(ctx, []*Stream{old}, StepOptions{}); return err },
		"Moderate":               func() error { _, err := m.Moderate(ctx, userMsg, nil); return err },
		"forwardFresh":           func() error { _, err := m.forwardFresh([][]int{{1, 2}}); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrModelClosed) {
			t.Errorf("%s after Close: %v, want ErrModelClosed", name, err)
		}
	}
	if old.Pending() != 0 {
		t.Errorf("the old stream queued %d tokens after Close", old.Pending())
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if m.Info().Layers != 2 || old.Len() == 0 || old.Decision().Tokens == 0 {
		t.Errorf("reading a closed model's streams: info %+v, len %d, decision %+v", m.Info(), old.Len(), old.Decision())
	}
	for _, s := range []*Stream{old, fresh} {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if _, err := s.JudgePrompt(ctx, userMsg); !errors.Is(err, ErrClosed) {
			t.Errorf("closed stream of a closed model: %v, want ErrClosed", err)
		}
	}
}

// TestModelCloseWhileInUse (run it with -race): goroutines judge prompts and
// stream text, each on streams it opens and keeps, while the model is
// closed under them. Close waits for the forwards under way; every call
// either succeeds or fails with ErrModelClosed, and none reads the unmapped
// weights.
func TestModelCloseWhileInUse(t *testing.T) {
	ctx := context.Background()
	m := loadMapped(t)
	const workers = 3
	var started sync.WaitGroup
	started.Add(workers)
	var done sync.WaitGroup
	var ok, closed atomic.Int64
	for w := range workers {
		done.Add(1)
		go func() {
			defer done.Done()
			old := m.NewStream() // opened before the Close, used across it
			defer old.Close()
			first := true
			for i := 0; ; i++ {
				s := m.NewStream()
				_, err1 := s.JudgePrompt(ctx, userMsg)
				_, err2 := s.AppendText(ctx, "Boil water, pour it ")
				s.Close()
				var err3 error
				if w%2 == 0 { // a long-lived stream, turn after turn
					if _, err3 = old.JudgePrompt(ctx, userMsg); err3 == nil {
						_, err3 = old.AppendText(ctx, "then wait ")
					}
				}
				n := 0
				for _, err := range []error{err1, err2, err3} {
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, ErrModelClosed):
						closed.Add(1)
						n++
					default:
						t.Errorf("worker %d: %v, want success or ErrModelClosed", w, err)
						n++
					}
				}
				if first {
					first = false
					started.Done()
				}
				if n > 0 && i > 0 {
					return
				}
			}
		}()
	}
	started.Wait() // every worker has run the model at least once
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	done.Wait()
	t.Logf("%d calls succeeded, %d failed with ErrModelClosed", ok.Load(), closed.Load())
	if ok.Load() == 0 || closed.Load() == 0 {
		t.Errorf("%d calls succeeded and %d failed with ErrModelClosed: the Close did not overlap the work", ok.Load(), closed.Load())
	}
}

// TestZeroValues: a nil or zero Model and a zero Stream are not usable;
// their methods return errors or zero values, and do not panic.
func TestZeroValues(t *testing.T) {
	ctx := context.Background()
	var nilModel *Model
	for name, m := range map[string]*Model{"nil Model": nilModel, "zero Model": {}} {
		if err := m.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: second Close: %v", name, err)
		}
		if _, err := m.Step(ctx, nil, StepOptions{}); err == nil {
			t.Errorf("%s: Step succeeded", name)
		}
		if _, err := m.Moderate(ctx, userMsg, nil); err == nil {
			t.Errorf("%s: Moderate succeeded", name)
		}
		if i := m.Info(); i.Layers != 0 {
			t.Errorf("%s: Info %+v", name, i)
		}
		_ = m.Policy()
		zeroStream(t, name+" NewStream", m.NewStream())
	}
	zeroStream(t, "zero Stream", &Stream{})
}

// zeroStream checks that every method of an unusable stream returns an
// error or a zero value.
func zeroStream(t *testing.T, name string, s *Stream) {
	t.Helper()
	ctx := context.Background()
	errs := map[string]error{
		"QueuePrompt":      s.QueuePrompt(userMsg),
		"QueuePromptIDs":   s.QueuePromptIDs([]int{1, 151645}),
		"StartResponse":    s.StartResponse(false),
		"QueueIDs":         s.QueueIDs([]int{1}),
		"QueueText":        s.QueueText("x"),
		"QueueFlushText":   s.QueueFlushText(),
		"QueueEndThinking": s.QueueEndThinking(),
		"QueueEndResponse": s.QueueEndResponse(),
		"SetPolicy":        s.SetPolicy(Policy{}),
		"SetMaxTokens":     s.SetMaxTokens(10),
	}
	_, errs["JudgePrompt"] = s.JudgePrompt(ctx, userMsg)
	_, errs["JudgePromptIDs"] = s.JudgePromptIDs(ctx, []int{1, 151645})
	_, errs["AppendText"] = s.AppendText(ctx, "x")
	_, errs["AppendIDs"] = s.AppendIDs(ctx, []int{1})
	_, errs["FlushText"] = s.FlushText(ctx)
	_, errs["EndThinking"] = s.EndThinking(ctx)
	_, errs["EndResponse"] = s.EndResponse(ctx)
	for call, err := range errs {
		if err == nil {
			t.Errorf("%s: %s succeeded", name, call)
		}
	}
	if _, flagged := s.Flagged(); flagged || s.Decision().Flagged || s.Len() != 0 || s.Pending() != 0 ||
		s.HeldBytes() != 0 || s.CacheBytes() != 0 || s.LastPrompt() != nil {
		t.Errorf("%s: reads a state that is not a fresh stream's", name)
	}
	if err := s.Close(); err != nil {
		t.Errorf("%s: Close: %v", name, err)
	}
}
