package guard

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// hookEngine runs hook at the start of every forward: what another
// goroutine does while a synchronous call's forward runs.
type hookEngine struct {
	engine
	hook func()
}

func (e hookEngine) forward(c []kvCache, ids [][]int, hidden bool) ([]qwen3.Output, error) {
	e.hook()
	return e.engine.forward(c, ids, hidden)
}

// modelClosingDuringForward is a fresh tiny model; closeNext makes its
// next forward close s first, as another goroutine's s.Close() landing
// during that forward would.
func modelClosingDuringForward(t *testing.T) (m *Model, closeNext func(s *Stream)) {
	base := tinyModel(t, "f32", nil)
	m, err := wrap(base.net, base.tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var target *Stream
	m.eng = hookEngine{engine: m.eng, hook: func() {
		if target != nil {
			target.Close()
			target = nil
		}
	}}
	return m, func(s *Stream) { target = s }
}

// A synchronous call whose stream another goroutine closes during its
// forward ends with ErrClosed: not an internal error (JudgePrompt found no
// verdict) nor a success with no verdicts (AppendText).
func TestCloseDuringForwardEndsTheCall(t *testing.T) {
	ctx := context.Background()
	t.Run("JudgePrompt", func(t *testing.T) {
		m, closeNext := modelClosingDuringForward(t)
		s := m.NewStream()
		closeNext(s)
		if pv, err := s.JudgePrompt(ctx, userMsg); !errors.Is(err, ErrClosed) {
			t.Errorf("JudgePrompt on a stream closed during its forward: %v, %v; want ErrClosed", pv, err)
		}
	})
	t.Run("AppendText", func(t *testing.T) {
		m, closeNext := modelClosingDuringForward(t)
		s := m.NewStream()
		if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
			t.Fatal(err)
		}
		closeNext(s)
		if tvs, err := s.AppendText(ctx, "Hello there, friend. How are you?"); !errors.Is(err, ErrClosed) {
			t.Errorf("AppendText on a stream closed during its forward: %d verdicts, %v; want ErrClosed", len(tvs), err)
		}
	})
}

// Synchronous calls on one stream from several goroutines take turns:
// none fails, and together they judge what one goroutine making the same
// calls in some order judges (every chunk is the same text, so any order
// is that order). Run with -race.
func TestConcurrentCallsOnOneStreamTakeTurns(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	const chunk, calls = " hello there, hello there", 40
	want := m.NewStream()
	defer want.Close()
	if _, err := want.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	var wantN int
	for range calls {
		tvs, err := want.AppendText(ctx, chunk)
		if err != nil {
			t.Fatal(err)
		}
		wantN += len(tvs)
	}

	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		n    int
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls / 4 {
				tvs, err := s.AppendText(ctx, chunk)
				mu.Lock()
				n += len(tvs)
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d concurrent AppendText calls on one stream failed; first: %v", len(errs), calls, errs[0])
	}
	if n != wantN || s.Len() != want.Len() || s.Decision() != want.Decision() {
		t.Errorf("concurrent calls: %d verdicts, %d fed, decision %+v; one goroutine: %d, %d, %+v", n, s.Len(), s.Decision(), wantN, want.Len(), want.Decision())
	}
	// A call waiting its turn gives up with its context.
	if err := s.enter(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.AppendText(cctx, "late"); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrNotTaken) {
		t.Errorf("a call waiting for another's turn, its context done: %v; want context.Canceled and ErrNotTaken", err)
	}
	s.leave()
}

// A JudgePrompt cancelled before its prompt is judged is finished by the
// same call with the same messages (the verdict a fresh stream gives),
// not queued twice; a prompt of other messages is refused meanwhile.
func TestJudgePromptRetriedAfterCancel(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	defer func(n int) { prefillChunk = n }(prefillChunk)
	prefillChunk = 32
	msgs := []Message{{Role: "user", Content: strings.Repeat("a long question about bread and ovens ", 20)}}
	fresh := m.NewStream()
	defer fresh.Close()
	want, err := fresh.JudgePrompt(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}

	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(&stopAfter{Context: context.Background(), n: 1}, msgs); !errors.Is(err, context.Canceled) {
		t.Fatalf("first try: %v, want context.Canceled", err)
	}
	if s.Pending() == 0 {
		t.Fatal("the cancelled prompt left nothing queued: the test cancels too late")
	}
	other := []Message{{Role: "user", Content: "Something else."}}
	if _, err := s.JudgePrompt(context.Background(), other); err == nil || !strings.Contains(err.Error(), "same messages") {
		t.Errorf("another prompt while one is unfinished: %v; want it refused", err)
	}
	got, err := s.JudgePrompt(context.Background(), msgs) // the retry
	if err != nil {
		t.Fatal(err)
	}
	if got.Position != want.Position || !bitsEqual(got.RiskProbs, want.RiskProbs) || s.Len() != fresh.Len() {
		t.Errorf("retried JudgePrompt: verdict at position %d (stream of %d tokens), want %d (%d) as on a fresh stream", got.Position, s.Len(), want.Position, fresh.Len())
	}
	// Once judged, the same messages again are a new turn.
	if again, err := s.JudgePrompt(context.Background(), msgs); err != nil || again.Position <= got.Position {
		t.Errorf("the same prompt once more: %+v, %v; want a later turn", again, err)
	}
}

// An LLM that streams no text (an empty completion, an answer of tool
// calls only): EndResponse right after the prompt closes an empty
// assistant turn as the chat template writes one, and the conversation
// goes on.
func TestEmptyResponseEndsTheTurn(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FlushText(ctx); err != nil {
		t.Fatal(err)
	}
	if d := s.Decision(); d.Tokens != 0 || d.Flagged {
		t.Fatalf("decision of an empty answer: %+v", d)
	}
	before := s.Len()
	tvs, err := s.EndResponse(ctx)
	if err != nil || len(tvs) != 0 {
		t.Fatalf("EndResponse after an empty answer: %d verdicts, %v; want the empty turn closed, nothing judged", len(tvs), err)
	}
	header, end := len(m.scaffold.responseHeader), len(m.scaffold.turnEnd)
	if got := s.Len() - before; got != header+end {
		t.Errorf("the empty turn fed %d tokens, want the header and the turn's end (%d)", got, header+end)
	}
	if _, err := s.EndResponse(ctx); err == nil {
		t.Error("a second EndResponse: no error")
	}
	if _, err := s.JudgePrompt(ctx, []Message{{Role: "user", Content: "Thanks!"}}); err != nil {
		t.Fatal(err)
	}
}

// SetMaxTokens counts held-back text as the tokens flushing it would
// make: a bound it accepts leaves FlushText room.
func TestSetMaxTokensCountsHeldText(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendText(ctx, "Hello supercalifragilistic"); err != nil {
		t.Fatal(err)
	}
	if s.HeldBytes() == 0 {
		t.Fatal("no held text")
	}
	n := s.Len() + s.Pending()
	if err := s.SetMaxTokens(n); err == nil {
		t.Fatalf("SetMaxTokens(%d) accepted with %d bytes held", n, s.HeldBytes())
	}
	var e tokenizer.StreamEncoder
	s.enc.CopyTo(&e)
	flushed := len(e.Flush())
	if err := s.SetMaxTokens(n + flushed); err != nil {
		t.Fatalf("SetMaxTokens(%d), room for the held text's %d tokens: %v", n+flushed, flushed, err)
	}
	if _, err := s.FlushText(ctx); err != nil {
		t.Errorf("FlushText within the bound: %v", err)
	}
}

// Step leaves out a stream closed before it (its client went away while
// the server gathered the batch): the other streams are stepped, the
// closed one gets an empty result.
func TestStepLeavesOutAClosedStream(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	live, gone := m.NewStream(), m.NewStream()
	defer live.Close()
	for _, s := range []*Stream{live, gone} {
		if err := s.QueuePrompt([]Message{{Role: "user", Content: "Hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	gone.Close()
	rs, err := m.Step(context.Background(), []*Stream{live, gone}, StepOptions{})
	if err != nil || live.Pending() != 0 || rs[0].Prompt == nil || rs[1].Stream != gone || rs[1].Fed != 0 || rs[1].Prompt != nil {
		t.Fatalf("Step over a live stream and a closed one: %+v, %v; live stream has %d queued", rs, err, live.Pending())
	}
	if rs, err := m.Step(context.Background(), []*Stream{gone}, StepOptions{}); err != nil || len(rs) != 1 || rs[0].Fed != 0 {
		t.Errorf("Step over a closed stream alone: %+v, %v", rs, err)
	}
}

// A Close from another goroutine can land after a synchronous call queued
// its input, before its first forward or between two of a long prefill's:
// Close empties the queue, and the call ends with ErrClosed, not with
// success (AppendText) or an internal error (JudgePrompt). The calls'
// own pieces replay those interleavings.
func TestCloseBetweenQueueAndForward(t *testing.T) {
	ctx := context.Background()
	t.Run("AppendText", func(t *testing.T) {
		m := tinyModel(t, "f32", nil)
		s := m.NewStream()
		if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
			t.Fatal(err)
		}
		tvs, err := s.runAfter(ctx, func() error {
			err := s.QueueText("Hello there, friend. How are you today? ")
			s.Close()
			return err
		})
		if !errors.Is(err, ErrClosed) {
			t.Errorf("AppendText whose stream was closed after its queue: %d verdicts, %v; want ErrClosed", len(tvs), err)
		}
	})
	t.Run("JudgePrompt", func(t *testing.T) {
		m := tinyModel(t, "f32", nil)
		s := m.NewStream()
		ids, err := s.renderPrompt(userMsg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.enter(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.leave()
		if err := s.QueuePromptIDs(ids); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if pv, err := s.promptResult(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("JudgePrompt whose stream was closed after its queue: %v, %v; want ErrClosed", pv, err)
		}
	})
	t.Run("between chunks", func(t *testing.T) {
		m := tinyModel(t, "f32", nil)
		defer func(n int) { prefillChunk = n }(prefillChunk)
		prefillChunk = 4
		s := m.NewStream()
		if err := s.QueuePrompt(userMsg); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Step(ctx, []*Stream{s}, StepOptions{MaxTokens: prefillChunk}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if r, err := s.run(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("the rest of a prefill after a Close between chunks: %+v, %v; want ErrClosed", r, err)
		}
	})
}

// Two prompts queued through the Queue API: once the first is judged, the
// second is still the one a JudgePrompt with its ids finishes; ids that
// are no prompt are refused before anything else.
func TestJudgePromptFinishesTheLastQueuedPrompt(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	first, err := s.renderPrompt(userMsg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.QueuePromptIDs(first); err != nil {
		t.Fatal(err)
	}
	second := []Message{{Role: "user", Content: "And how long does it take?"}}
	ids, err := s.renderPrompt(second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.QueuePromptIDs(ids); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Step(ctx, []*Stream{s}, StepOptions{MaxTokens: len(first) + 1}); err != nil || s.LastPrompt() == nil {
		t.Fatalf("the first prompt: %v, %v", s.LastPrompt(), err)
	}
	if _, err := s.JudgePromptIDs(ctx, nil); err == nil {
		t.Error("JudgePromptIDs(nil): no error")
	}
	pv, err := s.JudgePromptIDs(ctx, ids)
	if err != nil || pv.Position != s.Len()-1 || s.Pending() != 0 {
		t.Errorf("finishing the second prompt: %+v, %v (stream of %d, %d pending)", pv, err, s.Len(), s.Pending())
	}
}

// nanEngine gives NaN for the response-risk logits of the sequences it
// lists (all when nil), as damaged weights do: a head with one NaN
// weight, or one token's NaN embedding row that only some inputs reach.
type nanEngine struct {
	engine
	seqs []int
}

func (e nanEngine) forward(c []kvCache, ids [][]int, hidden bool) ([]qwen3.Output, error) {
	outs, err := e.engine.forward(c, ids, hidden)
	for i, o := range outs {
		if e.seqs != nil && !slices.Contains(e.seqs, i) {
			continue
		}
		for _, r := range o.Risk {
			for k := range r {
				r[k] = float32(math.NaN())
			}
		}
	}
	return outs, err
}

// A stream whose forward gives a score that is not a finite number is
// judged nothing (read as a verdict it would be Safe): its StepResult.Err
// is ErrNonFinite and it is closed, its cache having fed what no verdict
// covers. The streams batched beside it are stepped as they would be
// alone; a synchronous call on such a stream ends with the error.
func TestNonFiniteScoresFailTheirStream(t *testing.T) {
	base := tinyModel(t, "f32", nil)
	m, err := wrap(base.net, base.tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alone := m.NewStream()
	defer alone.Close()
	bad, good := m.NewStream(), m.NewStream()
	defer good.Close()
	for _, s := range []*Stream{alone, bad, good} {
		if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
			t.Fatalf("a prompt: %v", err)
		}
		if err := s.QueueText("Hello there, friend. "); err != nil {
			t.Fatal(err)
		}
	}
	want, err := m.Step(ctx, []*Stream{alone}, StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.eng = nanEngine{engine: m.eng, seqs: []int{0}}
	rs, err := m.Step(ctx, []*Stream{bad, good}, StepOptions{})
	if err != nil {
		t.Fatalf("a step with one stream's scores NaN: %v; want the step to succeed", err)
	}
	if !errors.Is(rs[0].Err, ErrNonFinite) || len(rs[0].Tokens) != 0 {
		t.Errorf("the stream given NaN scores: %+v; want ErrNonFinite and no verdicts", rs[0])
	}
	if err := bad.QueueText("more"); !errors.Is(err, ErrClosed) || bad.CacheBytes() != 0 {
		t.Errorf("the stream given NaN scores, after: %v, %d cache bytes; want it closed", err, bad.CacheBytes())
	}
	if rs[1].Err != nil {
		t.Fatalf("the stream beside it: %v", rs[1].Err)
	}
	sameVerdicts(t, "the stream beside it", rs[1].Tokens, want[0].Tokens)

	m.eng = nanEngine{engine: m.eng.(nanEngine).engine} // every sequence
	s := m.NewStream()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if tvs, err := s.AppendText(ctx, "Hello there, friend. How are you?"); !errors.Is(err, ErrNonFinite) {
		t.Errorf("AppendText: %d verdicts, %v; want ErrNonFinite", len(tvs), err)
	}
}
