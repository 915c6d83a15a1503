package proxy

import (
	"context"
	"sync"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// judgeResult is the outcome of the guard calls made for one batch of
// queued text.
type judgeResult struct {
	verdicts []guard.TokenVerdict
	flushed  bool
	err      error
	// upTo is the number of pushes judged so far, this batch included.
	upTo int
}

// judge runs the guard calls of one response on its own goroutine, so the
// relay keeps reading the upstream and writing to the client meanwhile.
// Text queued while a call runs is judged together in the next call (one
// forward for all of it), so a guard slower than the upstream falls behind
// by batches, not by tokens.
type judge struct {
	s   Stream
	ctx context.Context

	mu     sync.Mutex
	ops    []feedOp
	flush  bool
	pushes int // pushes that queued something
	// backlog is what ops hold (their text and heldEventOverhead each):
	// what waits for the guard's next call.
	backlog int64

	wake   chan struct{}
	out    chan judgeResult
	stop   chan struct{}
	exited chan struct{}
}

func startJudge(ctx context.Context, s Stream) *judge {
	j := &judge{s: s, ctx: ctx, wake: make(chan struct{}, 1), out: make(chan judgeResult),
		stop: make(chan struct{}), exited: make(chan struct{})}
	go j.run()
	return j
}

// push queues guard calls; flush asks for the text's end to be judged.
// It refuses (false) ops whose text would make what waits for the guard's
// next call more than limit bytes.
func (j *judge) push(ops []feedOp, flush bool, limit int64) bool {
	if len(ops) == 0 && !flush {
		return true
	}
	var n int64
	for _, op := range ops {
		// Counted as held events are, with their overhead: an upstream
		// of one-byte deltas queues one op each.
		n += int64(len(op.text)) + heldEventOverhead
	}
	j.mu.Lock()
	if j.backlog+n > limit {
		j.mu.Unlock()
		return false
	}
	j.backlog += n
	j.ops = append(j.ops, ops...)
	j.flush = j.flush || flush
	j.pushes++
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return true
}

// caughtUp reports whether every push was judged, given the upTo of the
// last result received.
func (j *judge) caughtUp(upTo int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pushes == upTo
}

// close stops the goroutine and waits for it (and the stream's Close).
func (j *judge) close() {
	close(j.stop)
	<-j.exited
}

func (j *judge) run() {
	defer close(j.exited)
	defer j.s.Close()
	for {
		select {
		case <-j.wake:
		case <-j.stop:
			return
		}
		j.mu.Lock()
		ops, flush, upTo := j.ops, j.flush, j.pushes
		j.ops, j.flush, j.backlog = nil, false, 0
		j.mu.Unlock()
		res := apply(j.ctx, j.s, ops, flush)
		res.upTo = upTo
		select {
		case j.out <- res:
		case <-j.stop:
			return
		}
		if res.err != nil {
			<-j.stop
			return
		}
	}
}

// apply makes the guard calls for ops, merging consecutive text.
func apply(ctx context.Context, s Stream, ops []feedOp, flush bool) judgeResult {
	var r judgeResult
	var text []byte
	appendText := func() bool {
		if len(text) == 0 {
			return true
		}
		tvs, err := s.AppendText(ctx, string(text))
		text = text[:0]
		r.verdicts = append(r.verdicts, tvs...)
		r.err = err
		return err == nil
	}
	for _, op := range ops {
		if op.start {
			if !appendText() {
				return r
			}
			if r.err = s.StartResponse(ctx, op.thinking); r.err != nil {
				return r
			}
		}
		if op.endThink {
			if !appendText() {
				return r
			}
			tvs, err := s.EndThinking(ctx)
			r.verdicts = append(r.verdicts, tvs...)
			if r.err = err; err != nil {
				return r
			}
		}
		if op.tag != 0 {
			if !appendText() {
				return r
			}
			call := s.StartToolCall
			if op.tag == tokenizer.ToolCallEnd {
				call = s.EndToolCall
			}
			tvs, err := call(ctx)
			r.verdicts = append(r.verdicts, tvs...)
			if r.err = err; err != nil {
				return r
			}
		}
		text = append(text, op.text...)
	}
	if !appendText() {
		return r
	}
	if flush {
		tvs, err := s.FlushText(ctx)
		r.verdicts = append(r.verdicts, tvs...)
		r.err, r.flushed = err, err == nil
	}
	return r
}
