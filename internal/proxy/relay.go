package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// upstreamEvent is one event read from the upstream, or the error (io.EOF
// at the end) that ended the stream.
type upstreamEvent struct {
	ev  sseEvent
	err error
}

// heldEvent is an upstream event not yet written to the client.
type heldEvent struct {
	raw  []byte
	text *eventText
	// terminal events (the finish chunk and everything after it) wait
	// until the whole text was judged.
	terminal bool
	// reasoning field names the event used, for a partial chunk at a cut.
	hasReasoningContent, hasReasoning bool
}

// relay moderates one streamed response.
type relay struct {
	x    *exchange
	rc   *http.ResponseController
	feed *feeder
	tr   *tracker
	j    *judge
	k    int // hold-back look-ahead

	queue     []heldEvent
	meta      chunkMeta
	index     int
	finishing bool  // the upstream finished its text
	flushed   bool  // the guard judged all of it
	eof       bool  // the upstream's stream ended
	unjudged  error // fail-open after a guard failure: the cause
	broken    bool  // the client went away
}

func (x *exchange) relayStream(s Stream, resp *http.Response) {
	r := &relay{x: x, rc: http.NewResponseController(x.w), feed: newFeeder(), tr: newTracker(), k: x.t.lookahead()}
	r.j = startJudge(x.ctx, s)
	defer func() {
		x.cancel()
		r.j.close()
	}()
	// A stream outlives any server write timeout.
	_ = r.rc.SetWriteDeadline(time.Time{})
	h := x.w.Header()
	copyHeaders(h, resp.Header)
	h.Set("X-Streamguard-Mode", x.t.Mode.String())
	x.w.WriteHeader(resp.StatusCode)
	_ = r.rc.Flush()

	events := make(chan upstreamEvent)
	go readEvents(x.ctx, resp.Body, events)
	idle := time.NewTimer(x.h.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		var done bool
		select {
		case ue := <-events:
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(x.h.cfg.IdleTimeout)
			done = r.onEvent(ue)
		case res := <-r.j.out:
			done = r.onJudged(res)
		case <-idle.C:
			r.upstreamBroken(apiError{Message: "streamguard: the upstream sent nothing for " + x.h.cfg.IdleTimeout.String(),
				Type: typeUpstream, Code: "upstream_timeout"}, context.DeadlineExceeded)
			done = true
		case <-x.r.Context().Done():
			x.finish(EventClientClosed)
			done = true
		}
		if !done && r.broken {
			x.finish(EventClientClosed)
			done = true
		}
		if done {
			return
		}
	}
}

func readEvents(ctx context.Context, body io.Reader, out chan<- upstreamEvent) {
	rd := newSSEReader(body)
	for {
		ev, err := rd.next()
		if len(ev.raw) > 0 || err != nil {
			select {
			case out <- upstreamEvent{ev, err}:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// onEvent takes one upstream event; it reports whether the exchange ended.
func (r *relay) onEvent(ue upstreamEvent) bool {
	if len(ue.ev.raw) > 0 {
		if r.addEvent(ue.ev) {
			return true
		}
	}
	switch {
	case ue.err == io.EOF:
		r.eof = true
		if !r.finishing {
			r.upstreamBroken(streamBroken(io.ErrUnexpectedEOF), io.ErrUnexpectedEOF)
			return true
		}
	case ue.err != nil:
		if r.x.r.Context().Err() != nil {
			r.x.finish(EventClientClosed)
			return true
		}
		r.upstreamBroken(streamBroken(ue.err), ue.err)
		return true
	}
	return r.maybeEnd()
}

func streamBroken(err error) apiError {
	return apiError{Message: "streamguard: the upstream's stream broke off: " + err.Error(), Type: typeUpstream, Code: "upstream_disconnected"}
}

func (r *relay) addEvent(ev sseEvent) bool {
	p := parseEvent(ev)
	if p.apiErr != nil {
		// The upstream reports an error inside the stream: pass it on; the
		// text still held is not released.
		r.write(ev.raw)
		_ = r.rc.Flush()
		r.x.finish(EventUpstreamError, slog.String("error", string(p.apiErr)))
		return true
	}
	if p.isChunk && p.meta.ID != "" {
		r.meta = p.meta
	}
	he := heldEvent{raw: ev.raw, text: &eventText{}}
	if p.isChunk && p.index == 0 && !r.finishing && r.unjudged == nil {
		r.index = p.index
		r.feed.addReasoning(he.text, p.text.reasoning())
		if p.text.Content != nil {
			r.feed.addContent(he.text, *p.text.Content)
		}
		he.hasReasoningContent, he.hasReasoning = p.text.ReasoningContent != nil, p.text.Reasoning != nil
	}
	r.feed.end(he.text)
	flush := false
	if (p.finished || p.done) && !r.finishing {
		r.finishing = true
		flush = r.unjudged == nil
		if flush {
			r.feed.finish()
		}
	}
	he.terminal = r.finishing
	if r.unjudged != nil || r.x.t.Mode == PassThrough && !he.terminal {
		r.write(ev.raw)
		_ = r.rc.Flush()
	} else {
		r.queue = append(r.queue, he)
	}
	if r.unjudged == nil {
		r.j.push(r.feed.take(), flush)
	}
	r.release()
	return false
}

// onJudged takes the verdicts of one batch of guard calls.
func (r *relay) onJudged(res judgeResult) bool {
	r.tr.add(res.verdicts)
	r.x.tokens = r.tr.judged()
	r.tr.align.sync(r.feed.fed, res.flushed)
	if r.tr.flagged {
		r.cut()
		return true
	}
	if res.err != nil {
		return r.guardFailed(res.err)
	}
	r.flushed = r.flushed || res.flushed
	r.release()
	return r.maybeEnd()
}

// release writes the queued events that may go: in hold-back, those whose
// text and look-ahead were judged; in both modes, everything once the
// whole text was judged.
func (r *relay) release() {
	limit := -1
	if r.x.t.Mode == HoldBack {
		limit = r.tr.fedThrough(r.tr.judged() - r.k)
	}
	all := r.flushed || r.unjudged != nil
	n := 0
	for _, e := range r.queue {
		if !all && (e.terminal || e.text.pending > 0 || e.text.fedEnd > limit) {
			break
		}
		r.write(e.raw)
		n++
	}
	if n > 0 {
		r.queue = r.queue[n:]
		_ = r.rc.Flush()
	}
}

func (r *relay) maybeEnd() bool {
	if r.eof && (r.flushed || r.unjudged != nil) && len(r.queue) == 0 {
		if r.unjudged != nil {
			r.x.finish(EventUnjudged, slog.String("reason", r.unjudged.Error()))
		} else {
			r.x.finish(EventAllowed)
		}
		return true
	}
	return false
}

// cut ends a flagged stream: in hold-back the text before the run that
// flagged is released (whole events, then the part of the next one), then
// the content_filter finish and [DONE]; the upstream is cancelled.
func (r *relay) cut() {
	tv := r.tr.flag
	if r.x.t.Mode == HoldBack {
		cut := r.tr.cutFed()
		n := 0
		for _, e := range r.queue {
			if e.terminal || e.text.pending > 0 || e.text.fedEnd > cut {
				break
			}
			r.write(e.raw)
			n++
		}
		// The next event may be the finish chunk when it carries text too:
		// its text before the cut still goes, its finish_reason does not.
		if n < len(r.queue) {
			e := r.queue[n]
			content, reasoning := e.text.partial(cut)
			delta := map[string]any{}
			if content != "" {
				delta["content"] = content
			}
			if reasoning != "" {
				if e.hasReasoningContent || !e.hasReasoning {
					delta["reasoning_content"] = reasoning
				}
				if e.hasReasoning {
					delta["reasoning"] = reasoning
				}
			}
			if len(delta) > 0 {
				r.write(deltaChunk(r.meta, r.index, delta))
			}
		}
		r.queue = nil
	}
	r.write(finishChunk(r.meta, r.index, &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Risk, Category: tv.Category, Request: r.x.id}))
	r.write(doneEvent)
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventResponseFlagged, append(verdictAttrs(&tv.Verdict, tv.Index), slog.Int("run_start", r.tr.flagStart))...)
}

// guardFailed handles a guard failure mid-stream: fail-open forwards the
// rest unjudged, fail-closed ends the stream with an error event.
func (r *relay) guardFailed(err error) bool {
	if r.x.r.Context().Err() != nil {
		r.x.finish(EventClientClosed)
		return true
	}
	if r.x.t.FailOpen {
		r.unjudged = err
		r.release()
		return r.maybeEnd()
	}
	code := "guard_unavailable"
	if errors.Is(err, ErrOverloaded) {
		code = "guard_overloaded"
	}
	r.write(errorEvent(apiError{Message: "streamguard: the safety guard failed: " + err.Error(), Type: typeServer, Code: code}))
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventGuardError, slog.String("error", err.Error()))
	return true
}

// upstreamBroken ends the stream with an error event; text still held is
// not released.
func (r *relay) upstreamBroken(e apiError, err error) {
	r.write(errorEvent(e))
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventUpstreamError, slog.String("error", err.Error()), slog.String("code", e.Code))
}

func (r *relay) write(b []byte) {
	if r.broken {
		return
	}
	if _, err := r.x.w.Write(b); err != nil {
		r.broken = true
		r.x.cancel()
	}
}
