package eval

import (
	"context"
	"fmt"
	"io"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// RunOptions configure Run.
type RunOptions struct {
	// Batch is the number of conversations run together through one
	// Model.Step (0: 8). Results do not depend on it.
	Batch int
	// Debounce is the policy's run length (0: guard.DefaultDebounce).
	Debounce int
	// Progress receives a progress bar (nil: none).
	Progress io.Writer
}

// Run judges every item with m, several conversations per forward; ctx is
// checked before each forward.
// Verdicts are read with the strict policy, from which both modes follow:
// a flag in loose mode is a strict flag whose run is all Unsafe.
func Run(ctx context.Context, m *guard.Model, items []Item, opts RunOptions) ([]Prediction, error) {
	batch := opts.Batch
	if batch <= 0 {
		batch = 8
	}
	policy := guard.Policy{Mode: guard.Strict, Debounce: opts.Debounce}
	preds := make([]Prediction, len(items))
	prog := newProgress(opts.Progress, len(items))
	defer prog.finish()
	for lo := 0; lo < len(items); lo += batch {
		hi := min(lo+batch, len(items))
		if err := runGroup(ctx, m, items[lo:hi], preds[lo:hi], policy); err != nil {
			return nil, err
		}
		tokens := 0
		for _, p := range preds[lo:hi] {
			tokens += p.Tokens
		}
		prog.add(hi-lo, tokens)
	}
	return preds, nil
}

// queued is one conversation of a group on its stream.
type queued struct {
	it     *Item
	s      *guard.Stream
	ids    []int
	judged []guard.TokenVerdict
	prompt *guard.PromptVerdict
}

// runGroup queues each conversation on its own stream with the exact ids
// the chat template gives, runs Model.Step until every queue is empty, and
// reads the verdicts.
func runGroup(ctx context.Context, m *guard.Model, items []Item, preds []Prediction, policy guard.Policy) error {
	tok := guardhook.Tokenizer(m)
	qs := make([]*queued, len(items))
	var streams []*guard.Stream
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	for i := range items {
		it := &items[i]
		q, err := queue(m, tok, it, policy)
		if err != nil {
			return fmt.Errorf("line %d: %w", it.Line, err)
		}
		qs[i] = q
		streams = append(streams, q.s)
	}
	byStream := map[*guard.Stream]*queued{}
	for _, q := range qs {
		byStream[q.s] = q
	}
	for {
		pending := false
		for _, s := range streams {
			if s.Pending() > 0 {
				pending = true
			}
		}
		if !pending {
			break
		}
		rs, err := m.Step(ctx, streams, guard.StepOptions{})
		if err != nil {
			return err
		}
		for _, r := range rs {
			q := byStream[r.Stream]
			if r.Prompt != nil {
				q.prompt = r.Prompt
			}
			q.judged = append(q.judged, r.Tokens...)
		}
	}
	unsafe := indexOf(m.Info().Labels.ResponseRisk, Unsafe) // Info clones the labels: once, not per item
	for i, q := range qs {
		p, err := q.prediction(tok, unsafe)
		if err != nil {
			return fmt.Errorf("line %d: %w", q.it.Line, err)
		}
		preds[i] = p
	}
	return nil
}

// queue lays an item out with the one chat scaffold
// (tokenizer.RenderConversation) and queues it on a new stream.
func queue(m *guard.Model, tok *tokenizer.Tokenizer, it *Item, policy guard.Policy) (*queued, error) {
	c, err := tok.RenderConversation(it.Messages)
	if err != nil {
		return nil, err
	}
	s := m.NewStream()
	q := &queued{it: it, s: s, ids: c.Prompt()}
	fail := func(err error) (*queued, error) {
		s.Close()
		return nil, err
	}
	if err := s.SetPolicy(policy); err != nil {
		return fail(err)
	}
	if err := s.QueuePromptIDs(q.ids); err != nil {
		return fail(err)
	}
	if !c.Response {
		return q, nil
	}
	if err := s.StartResponse(c.Thinking); err != nil {
		return fail(err)
	}
	if err := s.QueueIDs(c.Judged()); err != nil {
		return fail(err)
	}
	if err := s.QueueEndResponse(); err != nil {
		return fail(err)
	}
	q.ids = c.IDs
	return q, nil
}

// prediction reads a finished stream.
// unsafe is the index of the Unsafe level in the response risk labels
// (-1: none).
func (q *queued) prediction(tok *tokenizer.Tokenizer, unsafe int) (Prediction, error) {
	p := Prediction{Tokens: len(q.ids), SpanStart: q.it.UnsafeStart, SpanEnd: q.it.UnsafeEnd}
	if q.prompt == nil {
		return p, fmt.Errorf("no prompt verdict")
	}
	p.Prompt = Part{Level: verdictLevel(&q.prompt.Verdict), Position: q.prompt.Position, Index: -1}
	if p.Prompt.Level != Safe {
		p.Prompt.Category = q.prompt.Category
	}
	if !q.it.HasResponse() {
		return p, nil
	}
	d := q.s.Decision()
	r := &Part{Level: Safe, Position: -1, Index: -1, Tokens: d.Tokens, ContentStart: -1}
	if len(q.judged) > 0 {
		r.ContentStart = q.judged[0].Position
		p.Judged = make([]TokenRisk, len(q.judged))
		for i, t := range q.judged {
			p.Judged[i] = TokenRisk{Text: t.Text, Level: verdictLevel(&t.Verdict), Category: t.Category}
			if len(t.RiskProbs) > 0 {
				p.Judged[i].NonSafe = 1 - t.RiskProbs[0]
			}
			if unsafe >= 0 && unsafe < len(t.RiskProbs) {
				p.Judged[i].Unsafe = t.RiskProbs[unsafe]
			}
		}
	}
	if d.Level != "" && d.Index >= 0 && d.Index < len(q.judged) {
		r.Level, r.Category, r.Index, r.Position = d.Level, d.Category, d.Index, q.judged[d.Index].Position
	}
	p.Response = r
	if q.it.UnsafeStart >= 0 {
		// Token positions in the rendered conversation: the response's
		// first judged token to its closing "<|im_end|>\n". Positions
		// counted from the response's start, or from another template,
		// would be binned as if they were real.
		first, last := r.ContentStart, r.ContentStart+len(q.judged)+1
		if len(q.judged) == 0 || q.it.UnsafeStart < first || q.it.UnsafeEnd > last {
			return p, fmt.Errorf("unsafe span [%d, %d] is not within the response, at token positions [%d, %d] of the rendered conversation", q.it.UnsafeStart, q.it.UnsafeEnd, first, last)
		}
	}
	if q.it.UnsafeText != "" {
		ids := make([]int, len(q.judged))
		for i, t := range q.judged {
			ids[i] = t.ID
		}
		var err error
		if p.SpanStart, p.SpanEnd, err = locateSpan(tok, ids, r.ContentStart, q.it.UnsafeText); err != nil {
			return p, err
		}
	}
	return p, nil
}

// verdictLevel reads a verdict the way the guard policy does: risk index 0
// is safe, the label "Controversial" is controversial, any other label
// unsafe (a fine-tuned model may name its levels otherwise).
func verdictLevel(v *guard.Verdict) string {
	switch {
	case v.RiskIndex == 0:
		return Safe
	case v.Risk == Controversial:
		return Controversial
	}
	return Unsafe
}
