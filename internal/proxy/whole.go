package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// relayWhole moderates a response that is not streamed: it is judged whole
// before anything is returned.
func (x *exchange) relayWhole(s Stream, resp *http.Response) {
	defer s.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4*x.h.cfg.MaxRequestBytes+1))
	if err != nil {
		x.upstreamFailed(err)
		return
	}
	if int64(len(body)) > 4*x.h.cfg.MaxRequestBytes {
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response is too large to judge", Type: typeUpstream, Code: "upstream_too_large"})
		return
	}
	var c struct {
		Choices []struct {
			Message textFields `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response is not JSON: " + err.Error(), Type: typeUpstream, Code: "upstream_bad_response"})
		return
	}
	tr := newTracker()
	var m textFields
	if len(c.Choices) > 0 {
		m = c.Choices[0].Message
		f := newFeeder()
		ev := &eventText{}
		f.addReasoning(ev, m.reasoning())
		if m.Content != nil {
			f.addContent(ev, *m.Content)
		}
		f.finish()
		f.end(ev)
		res := apply(x.ctx, s, f.take(), true)
		tr.add(res.verdicts)
		x.tokens = tr.judged()
		tr.align.sync(f.fed, true)
		if !tr.flagged && res.err != nil {
			if x.ctx.Err() != nil {
				x.finish(EventClientClosed)
				return
			}
			if !x.t.FailOpen {
				x.guardFailed(res.err)
				return
			}
			x.w.Header().Set("X-Streamguard-Unjudged", "1")
			x.writeBody(resp, body)
			x.finish(EventUnjudged, slog.String("reason", res.err.Error()))
			return
		}
		if tr.flagged {
			x.withhold(body, ev, tr, m)
			return
		}
	}
	x.writeBody(resp, body)
	x.finish(EventAllowed)
}

func (x *exchange) writeBody(resp *http.Response, body []byte) {
	h := x.w.Header()
	copyHeaders(h, resp.Header)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(resp.StatusCode)
	_, _ = x.w.Write(body)
}

// withhold answers a flagged whole response: an error, or (refusal
// "completion") the response cut before the run that flagged, with
// finish_reason "content_filter".
func (x *exchange) withhold(body []byte, ev *eventText, tr *tracker, m textFields) {
	tv := tr.flag
	attrs := append(verdictAttrs(&tv.Verdict, tv.Index), slog.Int("run_start", tr.flagStart))
	if x.t.Refusal != RefusalCompletion {
		x.fail(http.StatusBadRequest, EventResponseFlagged, apiError{
			Message: "streamguard: the response was flagged (" + tv.Risk + ", " + tv.Category + ")",
			Type:    typeInvalidRequest, Code: finishContentFilter}, attrs...)
		return
	}
	out, err := cutResponse(body, ev, tr, m, &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Risk, Category: tv.Category, Request: x.id})
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

// cutResponse rewrites a completion: the first choice's message keeps the
// text before the cut, finish_reason becomes content_filter; every other
// field is kept.
func cutResponse(body []byte, ev *eventText, tr *tracker, m textFields, info *cutInfo) ([]byte, error) {
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
	content, reasoning := ev.partial(tr.cutFed())
	msg["content"] = mustJSON(content)
	if m.ReasoningContent != nil {
		msg["reasoning_content"] = mustJSON(reasoning)
	}
	if m.Reasoning != nil {
		msg["reasoning"] = mustJSON(reasoning)
	}
	choices[0]["message"] = mustJSON(msg)
	choices[0]["finish_reason"] = mustJSON(finishContentFilter)
	top["choices"] = mustJSON(choices)
	top["streamguard"] = mustJSON(info)
	return mustJSON(top), nil
}
