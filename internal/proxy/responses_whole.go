package proxy

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// wholePart is a part (or a function call) of a whole response and the
// text the guard read from it.
type wholePart struct {
	item int
	list *partList // the part's list in cut's items; nil for a call
	typ  string
	full string // the part's text as sent
	text *eventText
}

// judgeWholeResponse judges a whole Responses API answer, as judgeWhole
// does a chat completion.
func (x *exchange) judgeWholeResponse(s Stream, resp *http.Response, body []byte) {
	defer s.Close()
	refuse := func(err error) {
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response cannot be moderated: " + err.Error(), Type: typeUpstream, Code: "upstream_bad_response"})
	}
	if err := strictJSON(body, responseShape); err != nil {
		refuse(err)
		return
	}
	// Read into an outState, each part's text fed on its own eventText
	// so that a cut can keep the parts before it.
	x.respID = responseID(body)
	o := outState{limit: x.h.cfg.maxResponseBytes()}
	if err := o.readResponse(body, &newText{}); err != nil {
		refuse(err)
		return
	}
	f := newFeeder()
	var ops []feedOp
	var parts []wholePart
	var cut outState
	for i, it := range o.items {
		c := &outItem{typ: it.typ, id: it.id, raw: it.raw, call: it.call, name: it.name, args: it.args}
		cut.items = append(cut.items, c)
		add := func(list *partList, src *partList) {
			for _, p := range src.parts {
				ev := &eventText{}
				var n newText
				n.add(partKind(it.typ, p.typ), string(p.b))
				_ = n.feed(f, ev) // text only: no tool calls to refuse
				f.end(ev)
				ops = append(ops, f.take()...) // one op per part: no text copied again
				parts = append(parts, wholePart{item: i, list: list, typ: p.typ, full: string(p.b), text: ev})
			}
		}
		add(&c.summary, &it.summary)
		add(&c.content, &it.content)
		if itemTypes[it.typ].call {
			ev := &eventText{}
			tf := textFields{tools: []callPiece{{key: it.call, name: it.name, args: string(it.args), json: it.typ == "function_call"}}}
			if err := feedFields(f, ev, &tf); err != nil {
				refuse(err)
				return
			}
			ops = append(ops, f.take()...)
			parts = append(parts, wholePart{item: i, text: ev})
		}
	}
	f.finish() // closes the last call
	ops = append(ops, f.take()...)
	if len(parts) == 0 {
		x.writeBody(resp, body)
		x.finish(EventAllowed)
		return
	}
	tr := newTracker()
	res := apply(x.ctx, s, ops, true)
	tr.add(res.verdicts)
	x.tokens = tr.judged()
	tr.align.sync(f.fed, true)
	cutBody := func(at int, reason string, info *cutInfo) []byte {
		return cutWholeResponse(body, x.body, &cut, parts, at, reason, info)
	}
	switch {
	case tr.flagged:
		tv := tr.flag
		attrs := append(verdictAttrs(&tv.Verdict, tv.Index), slog.Int("run_start", tr.flagStart))
		info := &cutInfo{Reason: EventResponseFlagged, Token: tv.Index, Level: tv.Level, Category: tv.Category, Request: x.id}
		if x.t.Refusal != RefusalCompletion && !x.statusSent {
			x.fail(http.StatusBadRequest, EventResponseFlagged, apiError{
				Message: "streamguard: the response was flagged (" + tv.Level + ", " + tv.Category + ")",
				Type:    typeInvalidRequest, Code: finishContentFilter, Flag: info}, attrs...)
			return
		}
		x.writeJSON(cutBody(tr.cutFed(), "content_filter", info))
		x.finish(EventResponseFlagged, attrs...)
	case res.err == nil:
		x.remember(responseID(body), &o, false)
		x.writeBody(resp, body)
		x.finish(EventAllowed)
	case x.ctx.Err() != nil:
		x.finish(EventClientClosed)
	case isContextLength(res.err):
		x.writeJSON(cutBody(tr.fedThrough(tr.judged()-x.t.lookahead()), "max_output_tokens", &cutInfo{Reason: EventContextLength, Token: tr.judged(), Request: x.id}))
		x.finish(EventContextLength, slog.String("error", res.err.Error()))
	case !x.t.FailOpen:
		x.guardFailed(res.err)
	default:
		x.w.Header().Set("X-Streamguard-Unjudged", "1")
		x.writeBody(resp, body)
		x.finish(EventUnjudged, slog.String("reason", res.err.Error()))
	}
}

// cutWholeResponse rewrites a whole response to the text before fed
// offset at: the parts before it whole, the part it falls in cut, nothing
// after it (a function call goes whole or not at all); status
// "incomplete" with reason, and the streamguard member; of the rest, only
// the upstream's ids and usage and the request's own members (envelope).
func cutWholeResponse(body, request []byte, cut *outState, parts []wholePart, at int, reason string, info *cutInfo) []byte {
	kept := 0 // items kept
	for _, p := range parts {
		whole := p.text.pending == 0 && p.text.fedEnd <= at
		if p.list == nil { // a function call
			if !whole {
				break
			}
			kept = p.item + 1
			continue
		}
		text := p.full
		if !whole {
			if text = p.text.partial(at)[partKind(cut.items[p.item].typ, p.typ)]; text == "" {
				break
			}
		}
		p.list.parts = append(p.list.parts, &outPart{typ: p.typ, b: []byte(text)})
		kept = p.item + 1
		if !whole {
			break
		}
	}
	cut.items = cut.items[:kept]
	for i, it := range cut.items {
		it.done = i < kept-1
	}
	top := envelope(body, request)
	top["status"] = "incomplete"
	top["incomplete_details"] = map[string]string{"reason": reason}
	top["output"] = cut.json(true)
	top["streamguard"] = info
	return mustJSON(top)
}

// writeJSON answers 200 with a JSON body of the proxy's own.
func (x *exchange) writeJSON(body []byte) {
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(body)
}

// refuseResponse answers a flagged prompt as a Responses API answer:
// msg as the assistant's message, status "incomplete" for content_filter,
// streamed as OpenAI streams one when the request asked for a stream.
func (x *exchange) refuseResponse(msg string, info *cutInfo) {
	id := "resp_" + x.id
	created := time.Now().Unix()
	part := map[string]any{"type": "output_text", "text": msg, "annotations": []any{}}
	item := map[string]any{"id": "msg_" + x.id, "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
	final := map[string]any{"id": id, "object": "response", "created_at": created, "model": x.req.Model, "status": "incomplete",
		"incomplete_details": map[string]string{"reason": "content_filter"}, "error": nil, "output": []any{item},
		"usage": map[string]int{"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}, "streamguard": info}
	if !x.req.Stream {
		x.writeJSON(mustJSON(final))
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	x.w.WriteHeader(http.StatusOK)
	s := &responsesStream{x: x, seq: -1}
	begun := map[string]any{"id": id, "object": "response", "created_at": created, "model": x.req.Model, "status": "in_progress",
		"incomplete_details": nil, "error": nil, "output": []any{}, "usage": nil}
	empty := map[string]any{"type": "output_text", "text": "", "annotations": []any{}}
	open := map[string]any{"id": "msg_" + x.id, "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}
	at := map[string]any{"item_id": "msg_" + x.id, "output_index": 0, "content_index": 0}
	for _, e := range []struct {
		typ    string
		fields map[string]any
	}{
		{"response.created", map[string]any{"response": begun}},
		{"response.output_item.added", map[string]any{"output_index": 0, "item": open}},
		{"response.content_part.added", withMembers(at, "part", empty)},
		{"response.output_text.delta", withMembers(at, "delta", msg, "logprobs", []any{})},
		{"response.output_text.done", withMembers(at, "text", msg, "logprobs", []any{})},
		{"response.content_part.done", withMembers(at, "part", part)},
		{"response.output_item.done", map[string]any{"output_index": 0, "item": item}},
		{"response.incomplete", map[string]any{"response": final}},
	} {
		_, _ = x.w.Write(s.event(e.typ, e.fields))
	}
}

// withMembers is a copy of m with the members kv (name, value, ...) set.
func withMembers(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}
