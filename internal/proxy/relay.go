package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// upstreamEvent is one event read from the upstream, or the error (io.EOF
// at the end) that ended the stream; or, from an external driver, a sync
// request (sync set, nothing else).
type upstreamEvent struct {
	ev   sseEvent
	err  error
	sync *syncRequest
}

// syncRequest asks the relay loop to say when the text received so far
// was judged (so that hold-back released what it may), or until passed,
// or interrupt fired, whichever comes first; the loop closes done then
// (or when it ends). An external driver that must answer each body chunk
// (Envoy's STREAMED mode) uses it to send as much judged text as it can
// with each answer.
type syncRequest struct {
	until     time.Time // zero: answer once the events before it are taken
	interrupt <-chan struct{}
	done      chan struct{}
}

// heldEvent is an upstream event not yet written to the client.
type heldEvent struct {
	raw  []byte
	text *eventText
	// terminal events (the finish chunk and everything after it) wait
	// until the whole text was judged.
	terminal bool
	// info is what the API's stream keeps of the event
	// (parsedEvent.info).
	info any
	// done is the [DONE] event.
	done bool
}

// relay moderates one streamed response.
type relay struct {
	x    *exchange
	rc   *http.ResponseController
	feed *feeder
	tr   *tracker
	j    *judge
	k    int // hold-back look-ahead
	api  streamAPI

	queue      []heldEvent
	queued     int64 // the queue's cost (heldCost)
	finishing  bool  // the upstream finished its text
	flushed    bool  // the guard judged all of it
	eof        bool  // the upstream's stream ended
	doneSent   bool  // the client has the [DONE] event: the answer is complete
	unjudged   error // fail-open after a guard failure: the cause
	broken     bool  // the client went away
	judgedUpTo int   // the upTo of the last judge result
}

// newRelay starts the judge of a streamed response on s.
func (x *exchange) newRelay(s Stream) *relay {
	r := &relay{x: x, rc: http.NewResponseController(x.w), feed: newFeeder(), tr: newTracker(), k: x.t.lookahead(), api: x.h.api.newStream(x)}
	r.j = startJudge(x.ctx, s)
	return r
}

// close ends the exchange's upstream call and the judge (which closes the
// stream).
func (r *relay) close() {
	r.x.cancel()
	r.j.close()
}

func (x *exchange) relayStream(s Stream, resp *http.Response) {
	r := x.newRelay(s)
	defer r.close()
	// A stream outlives any server write timeout.
	_ = r.rc.SetWriteDeadline(time.Time{})
	h := x.w.Header()
	copyHeaders(h, resp.Header, x.h.cfg.ForwardCookies)
	h.Set("X-Streamguard-Mode", x.t.Mode.String())
	x.w.WriteHeader(resp.StatusCode)
	_ = r.rc.Flush()

	events := make(chan upstreamEvent)
	go readEvents(x.ctx, resp.Body, events)
	r.run(events, x.h.cfg.IdleTimeout)
}

// run is the relay's loop: upstream events (and sync requests) from
// events, verdicts from the judge, until the exchange ends. idleTimeout >
// 0 bounds the upstream's silence.
func (r *relay) run(events <-chan upstreamEvent, idleTimeout time.Duration) {
	x := r.x
	var idle *time.Timer
	var idleC <-chan time.Time
	if idleTimeout > 0 {
		idle = time.NewTimer(idleTimeout)
		defer idle.Stop()
		idleC = idle.C
	}
	var sync *syncRequest
	var syncTimer *time.Timer
	var syncC <-chan time.Time
	var syncInterrupt <-chan struct{}
	answer := func() {
		if sync != nil {
			close(sync.done)
			sync = nil
			syncInterrupt = nil
			if syncTimer != nil {
				syncTimer.Stop()
				syncTimer, syncC = nil, nil
			}
		}
	}
	defer answer()
	for {
		var done bool
		select {
		case ue := <-events:
			if ue.sync != nil {
				answer()
				sync, syncInterrupt = ue.sync, ue.sync.interrupt
				if d := time.Until(sync.until); !sync.until.IsZero() && d > 0 {
					syncTimer = time.NewTimer(d)
					syncC = syncTimer.C
				} else {
					answer()
				}
				break
			}
			if idle != nil {
				if !idle.Stop() {
					select {
					case <-idle.C:
					default:
					}
				}
				idle.Reset(idleTimeout)
			}
			done = r.onEvent(ue)
		case res := <-r.j.out:
			done = r.onJudged(res)
		case <-idleC:
			r.upstreamBroken(apiError{Message: "streamguard: the upstream sent nothing for " + idleTimeout.String(),
				Type: typeUpstream, Code: "upstream_timeout"})
			done = true
		case <-x.r.Context().Done():
			x.finish(EventClientClosed)
			done = true
		case <-syncC:
			answer()
		case <-syncInterrupt:
			answer()
		}
		if !done && r.broken {
			x.finish(EventClientClosed)
			done = true
		}
		if done {
			return
		}
		if sync != nil && r.j.caughtUp(r.judgedUpTo) {
			answer()
		}
	}
}

func readEvents(ctx context.Context, body io.Reader, out chan<- upstreamEvent) {
	rd := newSSEReader(body)
	for {
		ev, err := rd.next()
		if len(ev.raw) > 0 || err != nil {
			select {
			case out <- upstreamEvent{ev: ev, err: err}:
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
			r.upstreamBroken(streamBroken(io.ErrUnexpectedEOF))
			return true
		}
	case ue.err != nil:
		if r.x.r.Context().Err() != nil {
			r.x.finish(EventClientClosed)
			return true
		}
		r.upstreamBroken(streamBroken(ue.err))
		return true
	}
	return r.maybeEnd()
}

func streamBroken(err error) apiError {
	if errors.Is(err, errEventTooLarge) {
		// Not a dropped connection that a retry might mend.
		return apiError{Message: "streamguard: " + err.Error(), Type: typeUpstream, Code: "upstream_too_large"}
	}
	return apiError{Message: "streamguard: the upstream's stream broke off: " + err.Error(), Type: typeUpstream, Code: "upstream_disconnected"}
}

func (r *relay) addEvent(ev sseEvent) bool {
	ev.raw = completeEvent(ev.raw) // the stream's last event may lack its end
	p := r.api.parse(ev)
	if p.apiErr != nil {
		// The upstream reports an error inside the stream: pass it on; the
		// text still held is not released.
		r.write(r.api.passOn(ev, p.info))
		_ = r.rc.Flush()
		r.x.cancel()
		r.x.finish(EventUpstreamError, upstreamErrorAttrs(p.apiErr)...)
		return true
	}
	if p.bad == nil && r.finishing && r.unjudged == nil && p.hasText && !p.text.empty() {
		// The guard judged the text to its end at the finish chunk.
		p.bad = errors.New("text after the finish_reason or [DONE]")
	}
	if p.bad != nil {
		r.upstreamBroken(badEvent(p.bad))
		return true
	}
	he := heldEvent{raw: ev.raw, text: &eventText{}, done: p.done, info: p.info}
	if p.raw != nil {
		he.raw = p.raw
	}
	if p.hasText && !r.finishing && r.unjudged == nil {
		feed := p.feed
		if feed == nil {
			feed = func(f *feeder, ev *eventText) error { return feedFields(f, ev, &p.text) }
		}
		if err := feed(r.feed, he.text); err != nil {
			r.upstreamBroken(badEvent(err))
			return true
		}
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
		r.writeEvent(he)
		_ = r.rc.Flush()
	} else {
		// Events without text (comments, tool calls, empty deltas) queue
		// behind the text that waits for its look-ahead, and after the
		// finish until the end was judged: bounded as a whole response is.
		r.queued += heldCost(he)
		if limit := r.x.h.cfg.maxResponseBytes(); r.queued > limit {
			r.upstreamBroken(apiError{Message: fmt.Sprintf("streamguard: the upstream's events waiting for the guard's verdicts grew past %d bytes", limit),
				Type: typeUpstream, Code: "upstream_too_large"})
			return true
		}
		r.queue = append(r.queue, he)
	}
	if r.unjudged == nil {
		// In pass-through the events went out, but their text waits for
		// the guard: bounded as held events are, or an upstream faster
		// than the guard would be held in memory whole.
		if limit := r.x.h.cfg.maxResponseBytes(); !r.j.push(r.feed.take(), flush, limit) {
			r.upstreamBroken(apiError{Message: fmt.Sprintf("streamguard: the upstream's text waiting for the guard's verdicts grew past %d bytes", limit),
				Type: typeUpstream, Code: "upstream_too_large"})
			return true
		}
	}
	r.release()
	return r.maybeEnd()
}

// heldEventOverhead is what a queued event costs beyond its bytes (its
// heldEvent and eventText), so that many small events count too.
const heldEventOverhead = 256

func heldCost(e heldEvent) int64 { return int64(len(e.raw)) + heldEventOverhead }

// badEvent is the error event for an upstream event the proxy refuses.
func badEvent(err error) apiError {
	return apiError{Message: "streamguard: the upstream sent an event it cannot moderate: " + err.Error(), Type: typeUpstream, Code: "upstream_bad_response"}
}

// onJudged takes the verdicts of one batch of guard calls.
func (r *relay) onJudged(res judgeResult) bool {
	r.judgedUpTo = res.upTo
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
		r.writeEvent(e)
		r.queued -= heldCost(e)
		n++
	}
	if n > 0 {
		r.queue = r.queue[n:]
		_ = r.rc.Flush()
	}
}

// maybeEnd ends the exchange once everything was judged (or is forwarded
// unjudged) and written, at the upstream's end or as soon as the client has
// the [DONE] event: a client that closes the connection then has its whole
// answer, and the record says how it was judged.
func (r *relay) maybeEnd() bool {
	if (r.eof || r.doneSent) && (r.flushed || r.unjudged != nil) && len(r.queue) == 0 {
		if r.unjudged != nil {
			r.x.finish(EventUnjudged, slog.String("reason", r.unjudged.Error()))
		} else {
			r.api.allowed()
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
			r.writeEvent(e)
			n++
		}
		// The next event may be the finish chunk when it carries text too:
		// its text before the cut still goes, its finish_reason does not.
		if n < len(r.queue) {
			r.write(r.api.partial(&r.queue[n], cut))
		}
		r.queue = nil
	}
	r.write(r.api.end(finishContentFilter, &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Level, Category: tv.Category, Request: r.x.id}, r.tr.judged()))
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
	if isContextLength(err) {
		r.outOfRoom(err)
		return true
	}
	if r.x.t.FailOpen {
		r.unjudged, r.x.unjudged = err, err
		r.release()
		return r.maybeEnd()
	}
	code := "guard_unavailable"
	if errors.Is(err, ErrOverloaded) {
		code = "guard_overloaded"
	}
	r.write(r.api.errorEvent(apiError{Message: "streamguard: the safety guard failed: " + err.Error(), Type: typeServer, Code: code}))
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventGuardError, slog.String("error", err.Error()))
	return true
}

// outOfRoom ends a response longer than the guard's stream can hold: the
// rest cannot be judged, so it is not forwarded, whatever the tenant's
// fail-open. In hold-back the client gets the text judged with its
// look-ahead (as it would have anyway); then a finish chunk with
// finish_reason "length" and streamguard.reason "context_length_exceeded",
// and [DONE]. The upstream is cancelled.
func (r *relay) outOfRoom(err error) {
	if r.x.t.Mode == HoldBack {
		r.release()
		limit := r.tr.fedThrough(r.tr.judged() - r.k)
		if len(r.queue) > 0 {
			r.write(r.api.partial(&r.queue[0], limit))
		}
	}
	r.queue = nil
	r.write(r.api.end(finishLength, &cutInfo{Reason: EventContextLength, Token: r.tr.judged(), Request: r.x.id}, r.tr.judged()))
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventContextLength, slog.String("error", err.Error()))
}

// upstreamBroken ends the stream with an error event; text still held is
// not released (nor kept: an external driver holds the relay until it
// closes the call). The audit record has the error's code, not its
// message: that quotes what the upstream sent (a line that is not an
// event, an event's type), which may be the request's or the answer's text.
func (r *relay) upstreamBroken(e apiError) {
	r.queue, r.queued = nil, 0
	r.write(r.api.errorEvent(e))
	_ = r.rc.Flush()
	r.x.cancel()
	r.x.finish(EventUpstreamError, slog.String("code", e.Code))
}

func (r *relay) writeEvent(e heldEvent) {
	r.write(e.raw)
	if !r.broken {
		r.api.sent(&e)
	}
	if e.done && !r.broken {
		r.doneSent = true
	}
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
