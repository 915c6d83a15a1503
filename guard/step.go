package guard

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/streamguard/streamguard/internal/qwen3"
)

// StepOptions bound one Step.
type StepOptions struct {
	// MaxTokens caps the tokens taken from each stream's queue (0: all),
	// so that a long prompt prefill is split over several steps and does
	// not delay the other streams' tokens. Results do not depend on it.
	MaxTokens int
}

// StepResult is what one Step produced for one stream.
type StepResult struct {
	Stream *Stream
	// Prompt is set when the step reached the end of a user turn; a step
	// stops before a second one, so that each prompt verdict comes in a
	// result of its own, whatever MaxTokens is.
	Prompt *PromptVerdict
	// Tokens are the verdicts on the response tokens judged in this step.
	// The scaffold the stream feeds around them (the assistant header, an
	// empty think block, the closing <|im_end|>) shapes the context but is
	// not judged, and has no verdict here.
	Tokens []TokenVerdict
	// Fed is the number of tokens this step fed for the stream, prompt and
	// scaffold tokens included.
	Fed int
	// Err is this stream's own failure, the rest of the step unharmed:
	// ErrNonFinite when a score the step judged for it was not a finite
	// number. The stream is then closed, and nothing of it was judged.
	Err error
}

// Step runs one forward over the queued tokens of all the given streams
// together: every weight matrix is read once for the whole batch. A stream
// with nothing queued takes part trivially, and so does a closed one (a
// Close from another goroutine may land at any time): its result is empty.
// Each stream's results are bitwise identical to running it alone.
//
// ctx is checked before the forward (a forward that has started runs to its
// end); when it is done, Step takes nothing from the queues and returns an
// error wrapping ctx.Err(). On a closed model Step takes nothing either,
// and returns ErrModelClosed.
func (m *Model) Step(ctx context.Context, streams []*Stream, opts StepOptions) ([]StepResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("guard: step: %w", err)
	}
	if err := m.usable(); err != nil {
		return nil, err
	}
	for i, s := range streams {
		if s == nil { // refused before any stream is marked as in the step
			return nil, fmt.Errorf("guard: stream %d is nil", i)
		}
	}
	taken := make([][]item, len(streams))
	// The forward's sequences: live[j] is the stream of caches[j].
	live := make([]int, 0, len(streams))
	caches := make([]kvCache, 0, len(streams))
	idss := make([][]int, 0, len(streams))
	release := func() {
		for _, i := range live {
			s := streams[i]
			s.mu.Lock()
			s.inStep = false
			if s.closed { // closed while held: Close left the release to the step
				s.queue = nil
				s.cache.Release()
				s.fed = 0
			}
			s.mu.Unlock()
		}
	}
	for i, s := range streams {
		s.mu.Lock()
		var err error
		switch {
		case s.m != m:
			err = fmt.Errorf("guard: stream %d belongs to another model", i)
		case s.inStep:
			err = fmt.Errorf("guard: stream %d is already in a step (listed twice, or stepped concurrently)", i)
		case s.closed: // its cache is released: it takes no part
			s.mu.Unlock()
			continue
		}
		if err != nil {
			s.mu.Unlock()
			release()
			return nil, err
		}
		n := len(s.queue)
		if opts.MaxTokens > 0 {
			n = min(n, opts.MaxTokens)
		}
		// A step takes a stream's queue up to its second user turn's end,
		// not including it: a result has one Prompt, and a second turn's
		// verdict would replace the first's in a larger step than in
		// smaller ones.
		if k := slices.IndexFunc(s.queue[:n], isPromptEnd); k >= 0 {
			if k2 := slices.IndexFunc(s.queue[k+1:n], isPromptEnd); k2 >= 0 {
				n = k + 1 + k2
			}
		}
		taken[i] = s.queue[:n:n]
		s.inStep = true
		s.cacheBytes = s.cache.Bytes()
		s.mu.Unlock()
		ids := make([]int, n)
		for j, it := range taken[i] {
			ids[j] = it.id
		}
		live = append(live, i)
		caches, idss = append(caches, s.cache), append(idss, ids)
	}
	results := make([]StepResult, len(streams))
	for i, s := range streams {
		results[i] = StepResult{Stream: s}
	}
	if len(live) == 0 { // every stream closed
		return results, nil
	}
	// The forward reads the weights: Close must not unmap them meanwhile,
	// and one closed since the check above fails the step here, taking
	// nothing from the queues.
	var outs []qwen3.Output
	var ferr error
	func() {
		// Only the forward, which runs with no stream's lock held.
		defer func() {
			if r := recover(); r != nil {
				// A forward that panicked (a caller may recover it) may
				// have written part of the caches: the streams cannot go
				// on, and are closed, their memory released, before the
				// panic goes on.
				for _, i := range live {
					s := streams[i]
					s.mu.Lock()
					s.inStep, s.closed, s.queue, s.earlier = false, true, nil, nil
					s.cache.Release()
					s.fed = 0
					s.mu.Unlock()
				}
				panic(r)
			}
		}()
		outs, ferr = m.forwardLocked(caches, idss)
	}()
	// A stream whose judged scores are not finite numbers fails alone:
	// what else was batched with it must not change its outcome, nor its
	// outcome theirs.
	broken := make([]bool, len(live))
	if ferr == nil {
		for j, i := range live {
			broken[j] = !finiteScores(taken[i], &outs[j])
		}
	}
	for j, i := range live {
		s := streams[i]
		s.mu.Lock()
		s.inStep = false
		s.fed = s.cache.Len() // the forward is over: the cache is the lock's again
		switch {
		case broken[j]:
			// The forward fed what the queue holds, and judged none of
			// it: the stream cannot go on.
			s.closed, s.queue, s.earlier = true, nil, nil
			s.cache.Release()
			s.fed = 0
			results[i] = StepResult{Stream: s, Err: ErrNonFinite}
		case s.closed: // closed during the forward: nothing to report
			s.queue = nil
			s.cache.Release()
			s.fed = 0
			results[i] = StepResult{Stream: s}
		case ferr == nil:
			s.queue = s.queue[len(taken[i]):]
			if len(s.queue) == 0 {
				s.queue = nil
			}
			results[i] = s.apply(taken[i], &outs[j])
		}
		s.mu.Unlock()
	}
	switch {
	case errors.Is(ferr, ErrModelClosed):
		return nil, ferr
	case ferr != nil:
		return nil, fmt.Errorf("guard: %w", ferr)
	}
	return results, nil
}

// ErrNonFinite is a stream's error (StepResult.Err, or that of a call
// that runs a step) when the forward gave it a score that is not a finite
// number (NaN, ±Inf), as damaged weights do (a corrupt download, an export
// that overflowed): such a score judges nothing, and read as a verdict it
// would be Safe. The stream is closed (its cache fed what no verdict
// covers); a model that does this should be replaced.
var ErrNonFinite = errors.New("guard: the model gave a score that is not a finite number (NaN or ±Inf): its weights are damaged; nothing was judged")

// finiteScores reports whether the logits a step judges for items are
// all finite: the query heads' at a user turn's end, the response heads'
// at a response token.
func finiteScores(items []item, out *qwen3.Output) bool {
	finite := func(rows ...[]float32) bool {
		for _, r := range rows {
			for _, v := range r {
				if v-v != 0 { // NaN or ±Inf
					return false
				}
			}
		}
		return true
	}
	for j, it := range items {
		switch it.kind {
		case itemPromptEnd, itemTurnEnd:
			if !finite(out.QueryRisk[j], out.QueryCategory[j]) {
				return false
			}
		case itemResponse:
			if !finite(out.Risk[j], out.Category[j]) {
				return false
			}
		}
	}
	return true
}

// forwardLocked runs a forward under the model's read lock, released
// however the forward ends: a panic a caller recovers (net/http does) must
// not leave Close, and every later step, waiting on it.
func (m *Model) forwardLocked(caches []kvCache, idss [][]int) ([]qwen3.Output, error) {
	m.run.RLock()
	defer m.run.RUnlock()
	if err := m.usable(); err != nil {
		return nil, err
	}
	return m.eng.forward(caches, idss, false)
}

// apply turns the logits of the fed items into verdicts and policy state.
func (s *Stream) apply(items []item, out *qwen3.Output) StepResult {
	r := StepResult{Stream: s, Fed: len(items)}
	l := s.m.net.Labels
	pos := s.cache.Len() - len(items)
	for j, it := range items {
		switch it.kind {
		case itemTurnEnd:
			if !s.policy.EveryTurn {
				continue
			}
			v := newVerdict(out.QueryRisk[j], out.QueryCategory[j], l.QueryRisk, l.QueryCategory)
			lv := s.policy.classify(&v, s.m.queryUnsafeIdx, s.m.queryContIdx)
			v.Level = lv.name(&v, s.m.queryContIdx)
			s.earlier = append(s.earlier, PromptVerdict{Verdict: v, Position: pos + j, Flagged: s.policy.nonSafe(lv)})
		case itemPromptEnd:
			v := newVerdict(out.QueryRisk[j], out.QueryCategory[j], l.QueryRisk, l.QueryCategory)
			lv := s.policy.classify(&v, s.m.queryUnsafeIdx, s.m.queryContIdx)
			v.Level = lv.name(&v, s.m.queryContIdx)
			pv := &PromptVerdict{Verdict: v, Position: pos + j, Flagged: s.policy.nonSafe(lv)}
			turns := s.earlier
			s.earlier = nil // whatever the policy says now: they were this prompt's
			if s.policy.EveryTurn {
				// Every user turn's verdict, the last included; the
				// first flagged one decides when the last is not.
				turns = append(turns, *pv)
				if !pv.Flagged {
					for _, t := range turns {
						if t.Flagged {
							*pv = t
							break
						}
					}
				}
				pv.Turns = turns
			}
			s.lastPrompt, r.Prompt = pv, pv
			s.resp = newResponseState()
			s.turns++
			if !s.promptQueued() { // judged: nothing to finish
				s.prompt = nil
			}
		case itemScaffold, itemResponse:
			if it.begin {
				s.resp = newResponseState()
			}
			if it.kind == itemScaffold {
				continue
			}
			tv := TokenVerdict{Index: s.resp.n, Position: pos + j, ID: it.id, Text: it.text,
				Verdict: newVerdict(out.Risk[j], out.Category[j], l.ResponseRisk, l.ResponseCategory)}
			lv := s.policy.classify(&tv.Verdict, s.m.unsafeIdx, s.m.contIdx)
			tv.Level = lv.name(&tv.Verdict, s.m.contIdx)
			tv.NonSafe = s.policy.nonSafe(lv)
			tv.Flagged = s.resp.add(&s.policy, lv, tv.Category)
			r.Tokens = append(r.Tokens, tv)
		}
	}
	return r
}

// prefillChunk is the most tokens the synchronous calls feed in one
// forward: a long prefill is split so that a cancelled context takes effect
// between chunks. Results do not depend on it.
var prefillChunk = 256

// run steps this stream alone, prefillChunk tokens at a time, until its
// queue is empty or ctx is done. On cancellation it returns what the steps
// that ran produced, with an error wrapping ctx.Err(); the tokens not yet
// fed stay queued.
func (s *Stream) run(ctx context.Context) (StepResult, error) {
	all := StepResult{Stream: s}
	for {
		// Closed by another goroutine (after the call queued, during a
		// forward): Close emptied the queue, and the call must not read
		// as done.
		s.mu.Lock()
		closed, pending := s.closed, len(s.queue)
		s.mu.Unlock()
		if closed {
			return all, ErrClosed
		}
		if pending == 0 {
			break
		}
		rs, err := s.m.Step(ctx, []*Stream{s}, StepOptions{MaxTokens: prefillChunk})
		if err != nil {
			return all, err
		}
		r := rs[0]
		if r.Err != nil {
			return all, r.Err
		}
		if r.Prompt != nil {
			all.Prompt = r.Prompt
		}
		all.Tokens = append(all.Tokens, r.Tokens...)
		all.Fed += r.Fed
	}
	return all, nil
}

// JudgePrompt judges a user turn (see QueuePrompt) and returns its verdict.
// On a stream inside a response it ends the response first, judging the
// text the response held back without returning those verdicts: call
// EndResponse (or FlushText) before it to read them.
//
// A JudgePrompt that was cancelled before its prompt was judged is
// finished by calling it again with the same messages (the tokens fed
// stay fed, the rest are fed now); other messages are refused until then.
func (s *Stream) JudgePrompt(ctx context.Context, msgs []Message) (*PromptVerdict, error) {
	ids, err := s.renderPrompt(msgs)
	if err != nil {
		return nil, err
	}
	return s.JudgePromptIDs(ctx, ids)
}

// JudgePromptIDs judges a tokenized user turn ending with <|im_end|>; a
// cancelled one is finished as JudgePrompt's is.
func (s *Stream) JudgePromptIDs(ctx context.Context, ids []int) (*PromptVerdict, error) {
	if err := checkPromptIDs(ids); err != nil {
		return nil, err
	}
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	s.mu.Lock()
	queued, same := s.promptQueued(), slices.Equal(ids, s.prompt)
	s.mu.Unlock()
	switch {
	case queued && !same:
		return nil, errors.New("guard: an earlier prompt on this stream is not judged yet (its call was cancelled): call JudgePrompt again with the same messages to finish it")
	case !queued:
		if err := s.QueuePromptIDs(ids); err != nil {
			return nil, err
		}
	}
	return s.promptResult(ctx)
}

func (s *Stream) promptResult(ctx context.Context) (*PromptVerdict, error) {
	r, err := s.run(ctx)
	if err != nil {
		return nil, err
	}
	if r.Prompt == nil {
		return nil, errors.New("guard: internal error: prompt produced no verdict")
	}
	return r.Prompt, nil
}

// AppendIDs feeds response token ids and returns a verdict per token (the
// assistant header that opens a response is fed first, and not judged).
func (s *Stream) AppendIDs(ctx context.Context, ids []int) ([]TokenVerdict, error) {
	return s.runAfter(ctx, func() error { return s.QueueIDs(ids) })
}

// AppendText feeds response text (any chunking) and returns verdicts for
// the tokens that became final; see QueueText.
func (s *Stream) AppendText(ctx context.Context, text string) ([]TokenVerdict, error) {
	return s.runAfter(ctx, func() error { return s.QueueText(text) })
}

// FlushText judges the tokens AppendText held back at the end of the text.
func (s *Stream) FlushText(ctx context.Context) ([]TokenVerdict, error) {
	return s.runAfter(ctx, s.QueueFlushText)
}

// EndThinking closes the open think block (see QueueEndThinking) and
// returns the verdicts of the tokens that became final.
func (s *Stream) EndThinking(ctx context.Context) ([]TokenVerdict, error) {
	return s.runAfter(ctx, s.QueueEndThinking)
}

// StartToolCall opens a tool call of the answer (see QueueStartToolCall)
// and returns the verdicts of the tokens that became final.
func (s *Stream) StartToolCall(ctx context.Context) ([]TokenVerdict, error) {
	return s.runAfter(ctx, s.QueueStartToolCall)
}

// EndToolCall closes the open tool call (see QueueEndToolCall) and returns
// the verdicts of the tokens that became final.
func (s *Stream) EndToolCall(ctx context.Context) ([]TokenVerdict, error) {
	return s.runAfter(ctx, s.QueueEndToolCall)
}

// EndResponse flushes the text and closes the assistant turn, returning the
// last verdicts; the stream is then ready for the next user turn.
func (s *Stream) EndResponse(ctx context.Context) ([]TokenVerdict, error) {
	return s.runAfter(ctx, func() error { return s.queueEndResponse(true) })
}

// runAfter queues with queue, then runs the stream, as one synchronous
// call: the stream's other synchronous calls wait meanwhile.
func (s *Stream) runAfter(ctx context.Context, queue func() error) ([]TokenVerdict, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := queue(); err != nil {
		return nil, err
	}
	r, err := s.run(ctx)
	return r.Tokens, err
}

func isPromptEnd(it item) bool { return it.kind == itemPromptEnd }
