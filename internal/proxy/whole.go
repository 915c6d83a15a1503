package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// relayWhole moderates a response that is not streamed: it is judged whole
// before anything is returned.
func (x *exchange) relayWhole(s Stream, resp *http.Response) {
	ir := x.idleBody(resp.Body)
	body, err := io.ReadAll(io.LimitReader(ir, x.h.cfg.maxResponseBytes()+1))
	ir.stop()
	if err != nil {
		s.Close()
		x.upstreamFailed(err)
		return
	}
	if int64(len(body)) > x.h.cfg.maxResponseBytes() {
		s.Close()
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response is too large to judge", Type: typeUpstream, Code: "upstream_too_large"})
		return
	}
	x.h.api.judgeWhole(x, s, resp, body)
}

// judgeWhole judges a whole response body and answers: the body as it is,
// or the answer for a flagged response, one too long for the guard, or
// one that cannot be moderated. It closes s.
func (x *exchange) judgeWhole(s Stream, resp *http.Response, body []byte) {
	defer s.Close()
	refuse := func(err error) {
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response cannot be moderated: " + err.Error(), Type: typeUpstream, Code: "upstream_bad_response"})
	}
	m, err := parseCompletion(body)
	if err != nil {
		refuse(err)
		return
	}
	if m == nil {
		// No choice: no text.
		x.writeBody(resp, body)
		x.finish(EventAllowed)
		return
	}
	tr := newTracker()
	f := newFeeder()
	ev := &eventText{}
	if err := feedFields(f, ev, m); err != nil {
		refuse(err)
		return
	}
	f.finish()
	f.end(ev)
	res := apply(x.ctx, s, f.take(), true)
	tr.add(res.verdicts)
	x.tokens = tr.judged()
	tr.align.sync(f.fed, true)
	switch {
	case tr.flagged:
		x.withhold(body, ev, tr, m)
	case res.err == nil:
		x.writeBody(resp, body)
		x.finish(EventAllowed)
	case x.ctx.Err() != nil:
		x.finish(EventClientClosed)
	case isContextLength(res.err):
		x.tooLong(body, ev, tr, m, res.err)
	case !x.t.FailOpen:
		x.guardFailed(res.err)
	default:
		x.w.Header().Set("X-Streamguard-Unjudged", "1")
		x.writeBody(resp, body)
		x.finish(EventUnjudged, slog.String("reason", res.err.Error()))
	}
}

// parseCompletion reads a whole response strictly: the text fields of its
// one choice (nil when it has none).
func parseCompletion(body []byte) (*textFields, error) {
	if err := strictJSON(body, completionShape); err != nil {
		return nil, err
	}
	var c struct {
		Choices []struct {
			Index   int        `json:"index"`
			Message textFields `json:"message"`
			Text    *string    `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, err
	}
	switch {
	case len(c.Choices) == 0:
		return nil, nil
	case len(c.Choices) > 1:
		return nil, fmt.Errorf("%d choices (streamguard asks for one)", len(c.Choices))
	case c.Choices[0].Index != 0:
		return nil, fmt.Errorf("choice %d (streamguard asks for one)", c.Choices[0].Index)
	}
	m := c.Choices[0].Message
	if err := m.check(true); err != nil {
		return nil, err
	}
	if err := checkLegacyText(c.Choices[0].Text, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// tooLong answers a whole response longer than the guard's stream can
// hold, whatever the tenant's fail-open: the response cut to the text that
// was judged (with the look-ahead held back, as in a stream), with
// finish_reason "length" and streamguard.reason "context_length_exceeded".
func (x *exchange) tooLong(body []byte, ev *eventText, tr *tracker, m *textFields, err error) {
	out, cerr := cutResponse(body, ev, tr.fedThrough(tr.judged()-x.t.lookahead()), m, finishLength,
		&cutInfo{Reason: EventContextLength, Token: tr.judged(), Request: x.id})
	if cerr != nil {
		x.fail(http.StatusBadGateway, EventContextLength, apiError{Message: "streamguard: " + cerr.Error(), Type: typeUpstream, Code: "upstream_bad_response"})
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(out)
	x.finish(EventContextLength, slog.String("error", err.Error()))
}

func (x *exchange) writeBody(resp *http.Response, body []byte) {
	h := x.w.Header()
	copyHeaders(h, resp.Header, x.h.cfg.ForwardCookies)
	// The body was read as a JSON completion, whatever the upstream
	// called it: a browser must not take it for HTML.
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(resp.StatusCode)
	_, _ = x.w.Write(body)
}

// withhold answers a flagged whole response: an error, or (refusal
// "completion", or when the response's status was already sent) the
// response cut before the run that flagged, with finish_reason
// "content_filter".
func (x *exchange) withhold(body []byte, ev *eventText, tr *tracker, m *textFields) {
	tv := tr.flag
	attrs := append(verdictAttrs(&tv.Verdict, tv.Index), slog.Int("run_start", tr.flagStart))
	if x.t.Refusal != RefusalCompletion && !x.statusSent {
		x.fail(http.StatusBadRequest, EventResponseFlagged, apiError{
			Message: "streamguard: the response was flagged (" + tv.Level + ", " + tv.Category + ")",
			Type:    typeInvalidRequest, Code: finishContentFilter,
			Flag: &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Level, Category: tv.Category, Request: x.id}}, attrs...)
		return
	}
	out, err := cutResponse(body, ev, tr.cutFed(), m, finishContentFilter, &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Level, Category: tv.Category, Request: x.id})
	if err != nil {
		x.fail(http.StatusBadGateway, EventResponseFlagged, apiError{Message: "streamguard: " + err.Error(), Type: typeUpstream, Code: "upstream_bad_response"}, attrs...)
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(out)
	x.finish(EventResponseFlagged, attrs...)
}

// cutResponse rewrites a completion: its choice is rebuilt from the text
// before fed offset cut, with finish_reason reason. Only what carries that
// text, or none, is kept: index, the message's role and its judged text
// fields (those the upstream sent). Every other field of the choice goes:
// logprobs and an audio transcript spell the whole answer, the cut
// included; tool calls and annotations come with (or after) the text that
// was cut, as a stream cut stops before them. The completion's other
// fields (id, model, usage...) are kept.
func cutResponse(body []byte, ev *eventText, cut int, m *textFields, reason string, info *cutInfo) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	var choices []map[string]json.RawMessage
	if err := json.Unmarshal(top["choices"], &choices); err != nil || len(choices) == 0 {
		return nil, errors.New("the upstream's response has no choices")
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(choices[0]["message"], &msg); err != nil {
		return nil, errors.New("the upstream's response has no message")
	}
	t := ev.partial(cut)
	out := map[string]any{"content": t[fieldContent]}
	var role string
	if json.Unmarshal(msg["role"], &role) != nil || role == "" {
		role = "assistant"
	}
	out["role"] = role
	for _, f := range []struct {
		key  string
		text *string
		kind fieldKind
	}{
		{"reasoning_content", m.ReasoningContent, fieldReasoning},
		{"reasoning", m.Reasoning, fieldReasoning},
		{"refusal", m.Refusal, fieldRefusal},
	} {
		switch {
		case f.text != nil:
			out[f.key] = t[f.kind]
		case msg[f.key] != nil:
			out[f.key] = nil // sent as null: kept so
		}
	}
	index := choices[0]["index"]
	if index == nil {
		index = json.RawMessage("0")
	}
	top["choices"] = mustJSON([]map[string]any{{"index": index, "message": out, "logprobs": nil, "finish_reason": reason}})
	top["streamguard"] = mustJSON(info)
	return mustJSON(top), nil
}
