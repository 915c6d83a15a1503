package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// responsesEvent is a streamed Responses API event, the members of every
// type the proxy reads.
type responsesEvent struct {
	Type         string          `json:"type"`
	Seq          *int64          `json:"sequence_number"`
	ItemID       string          `json:"item_id"`
	OutputIndex  *int            `json:"output_index"`
	ContentIndex *int            `json:"content_index"`
	SummaryIndex *int            `json:"summary_index"`
	Delta        *string         `json:"delta"`
	Text         *string         `json:"text"`
	Refusal      *string         `json:"refusal"`
	Arguments    *string         `json:"arguments"`
	Name         *string         `json:"name"`
	Logprobs     json.RawMessage `json:"logprobs"`
	Item         json.RawMessage `json:"item"`
	Part         json.RawMessage `json:"part"`
	Response     json.RawMessage `json:"response"`
}

// responsesEventInfo is what a held event keeps (heldEvent.info): the
// event read, and its data.
type responsesEventInfo struct {
	ev   responsesEvent
	data []byte
}

// responsesStream is a streamed Responses API answer.
type responsesStream struct {
	x *exchange
	// snapshot is the response of the last response.created (or
	// in_progress, queued): the response the proxy ends starts from it.
	snapshot json.RawMessage
	recv     outState // what the upstream sent
	given    outState // what the client was sent
	seq      int64    // the last sequence number the client got
}

func newResponsesStream(x *exchange) *responsesStream { return &responsesStream{x: x, seq: -1} }

// parse reads one event strictly: its data must be a JSON object of a
// type the proxy reads, named as its "event" field names it, in an order
// the API sends them (see the comment of responses.go).
func (s *responsesStream) parse(ev sseEvent) parsedEvent {
	if ev.bad != nil {
		return parsedEvent{bad: ev.bad}
	}
	if ev.data == nil {
		return parsedEvent{}
	}
	d := bytes.Trim(ev.data, " \t\r\n")
	if string(d) == "[DONE]" {
		return parsedEvent{done: true}
	}
	if len(d) == 0 || d[0] != '{' {
		return parsedEvent{bad: errors.New("event data is not a JSON object")}
	}
	if err := strictJSON(d, responsesEventShape); err != nil {
		return parsedEvent{bad: fmt.Errorf("event data: %v", err)}
	}
	info := &responsesEventInfo{data: d}
	e := &info.ev
	if err := json.Unmarshal(d, e); err != nil {
		return parsedEvent{bad: fmt.Errorf("event data is not a Responses API event: %v", err)}
	}
	if ev.name != "" && ev.name != e.Type {
		return parsedEvent{bad: fmt.Errorf("an event named %q whose data is of type %q", ev.name, e.Type)}
	}
	p := parsedEvent{isChunk: true, info: info}
	switch e.Type {
	case "error", "response.failed":
		p.apiErr = d
		return p
	case "response.created", "response.in_progress", "response.queued":
		var r struct {
			Output []json.RawMessage `json:"output"`
		}
		if err := json.Unmarshal(e.Response, &r); err != nil || len(r.Output) > 0 || len(s.recv.items) > 0 {
			return parsedEvent{bad: fmt.Errorf("a %s event with output", e.Type)}
		}
		s.snapshot = e.Response
		return p
	}
	if s.snapshot == nil {
		return parsedEvent{bad: fmt.Errorf("a %s event before response.created", e.Type)}
	}
	var n newText
	switch e.Type {
	case "response.completed", "response.incomplete":
		p.finished = true
		if err := s.recv.readResponse(e.Response, &n); err != nil {
			return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
		}
	default:
		if err := s.recv.step(e, &n); err != nil {
			return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
		}
	}
	p.hasText, p.text = true, n.tf
	return p
}

// step reads an output event into o; the text it adds goes to n.
func (o *outState) step(e *responsesEvent, n *newText) error {
	switch e.Type {
	case "response.output_item.added":
		w, err := readItem(e.Item)
		if err != nil {
			return err
		}
		if e.OutputIndex == nil || *e.OutputIndex != len(o.items) {
			return fmt.Errorf("output_index %s where item %d comes next", index(e.OutputIndex), len(o.items))
		}
		if len(o.items) > 0 {
			o.items[len(o.items)-1].done = true
		}
		o.add(w, e.Item, n)
		return nil
	case "response.output_item.done":
		it, err := o.open(e)
		if err != nil {
			return err
		}
		w, err := readItem(e.Item)
		if err != nil {
			return err
		}
		if err := o.extend(it, w, n); err != nil {
			return err
		}
		it.raw, it.whole, it.done = e.Item, true, true
		return nil
	case "response.output_text.annotation.added":
		_, err := o.open(e)
		return err
	}
	it, err := o.open(e)
	if err != nil {
		return err
	}
	var list *[]*outPart
	idx := e.ContentIndex
	typ := ""
	switch e.Type {
	case "response.content_part.added", "response.content_part.done":
		list = &it.parts
	case "response.reasoning_summary_part.added", "response.reasoning_summary_part.done":
		list, idx = &it.summary, e.SummaryIndex
	case "response.output_text.delta", "response.output_text.done":
		list, typ = &it.parts, "output_text"
	case "response.refusal.delta", "response.refusal.done":
		list, typ = &it.parts, "refusal"
	case "response.reasoning_text.delta", "response.reasoning_text.done":
		list, typ = &it.parts, "reasoning_text"
	case "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done":
		list, idx, typ = &it.summary, e.SummaryIndex, "summary_text"
	case "response.function_call_arguments.delta":
		if it.typ != "function_call" || e.Delta == nil {
			return errors.New("arguments for an item that is not a function call")
		}
		it.args = append(it.args, *e.Delta...)
		if *e.Delta != "" {
			n.tf.tools = append(n.tf.tools, callPiece{key: it.call, args: *e.Delta, json: true})
		}
		return nil
	case "response.function_call_arguments.done":
		if it.typ != "function_call" || e.Arguments == nil {
			return errors.New("arguments for an item that is not a function call")
		}
		name := e.Name
		if name == nil {
			name = &it.name
		}
		return o.extend(it, &wireItem{Type: it.typ, Name: name, Arguments: e.Arguments}, n)
	default:
		return fmt.Errorf("an event type streamguard does not judge")
	}
	if idx == nil {
		return errors.New("no part index")
	}
	var full string
	if typ == "" {
		// A part added or done, whole.
		var p wirePart
		if err := json.Unmarshal(e.Part, &p); err != nil {
			return fmt.Errorf("part: %v", err)
		}
		types := partTypes[it.typ]
		if list == &it.summary {
			types = map[string]bool{"summary_text": it.typ == "reasoning"}
		}
		if err := checkPart(&p, types); err != nil {
			return err
		}
		typ, full = p.Type, p.body()
	} else {
		if !partTypes[it.typ][typ] && !(typ == "summary_text" && it.typ == "reasoning") {
			return fmt.Errorf("a %s part in a %s item", typ, it.typ)
		}
		if truthy(e.Logprobs) {
			return errors.New("log probabilities (their tokens are text streamguard does not judge)")
		}
		text := e.Text
		if typ == "refusal" {
			text = e.Refusal
		}
		if e.Delta != nil {
			// A delta extends the last part (or begins the next).
			switch *idx {
			case len(*list) - 1:
				p := (*list)[*idx]
				if p.typ != typ {
					return fmt.Errorf("a %s delta for a %s part", typ, p.typ)
				}
				p.b = append(p.b, *e.Delta...)
				n.add(partKind(typ), *e.Delta)
				return nil
			case len(*list):
				full = *e.Delta
			default:
				return fmt.Errorf("a delta for part %d where part %d is being written", *idx, len(*list)-1)
			}
		} else if text != nil {
			full = *text
		} else {
			return errors.New("no text")
		}
	}
	rest, err := o.extendPart(it, list, *idx, typ, full, true)
	n.add(partKind(typ), rest)
	return err
}

// open returns the item an output event names: the one being written.
func (o *outState) open(e *responsesEvent) (*outItem, error) {
	if len(o.items) == 0 || e.OutputIndex == nil || *e.OutputIndex != len(o.items)-1 {
		return nil, fmt.Errorf("output_index %s where item %d is being written", index(e.OutputIndex), len(o.items)-1)
	}
	it := o.items[len(o.items)-1]
	if it.done {
		return nil, fmt.Errorf("item %d after its end", len(o.items)-1)
	}
	id := e.ItemID
	if e.Type == "response.output_item.done" {
		id = ""
	}
	if id != "" && it.id != "" && id != it.id {
		return nil, fmt.Errorf("item_id %q where item %q is being written", id, it.id)
	}
	return it, nil
}

func readItem(raw json.RawMessage) (*wireItem, error) {
	var w wireItem
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("item: %v", err)
	}
	return &w, w.check()
}

func index(i *int) string {
	if i == nil {
		return "missing"
	}
	return fmt.Sprint(*i)
}

// sent notes an event the client got: its sequence number, and its output.
func (s *responsesStream) sent(e *heldEvent) {
	info, _ := e.info.(*responsesEventInfo)
	if info == nil {
		return
	}
	if info.ev.Seq != nil {
		s.seq = *info.ev.Seq
	}
	var n newText
	switch info.ev.Type {
	case "response.completed", "response.incomplete":
		_ = s.given.readResponse(info.ev.Response, &n)
	default:
		_ = s.given.step(&info.ev, &n) // read before, in recv: it reads
	}
}

// responsesDelta are the delta events whose text a cut can split, and
// the field their text is fed from.
var responsesDelta = map[string]fieldKind{
	"response.output_text.delta":            fieldContent,
	"response.refusal.delta":                fieldRefusal,
	"response.reasoning_text.delta":         fieldReasoning,
	"response.reasoning_summary_text.delta": fieldReasoning,
}

func (s *responsesStream) partial(e *heldEvent, cut int) []byte {
	info, _ := e.info.(*responsesEventInfo)
	if info == nil {
		return nil
	}
	kind, ok := responsesDelta[info.ev.Type]
	if !ok {
		return nil
	}
	t := e.text.partial(cut)[kind]
	if t == "" {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(info.data, &m) != nil {
		return nil
	}
	m["delta"] = mustJSON(t)
	delete(m, "obfuscation") // padding sized to the whole delta
	cp := *info
	cp.ev.Delta = &t
	s.sent(&heldEvent{info: &cp})
	return namedEvent(info.ev.Type, m)
}

// namedEvent is an SSE event as the Responses API writes one: named for
// its type.
func namedEvent(typ string, v any) []byte {
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", typ, mustJSON(v))
}

// event is an event of the proxy's own, numbered after the last one the
// client got.
func (s *responsesStream) event(typ string, fields map[string]any) []byte {
	s.seq++
	fields["type"], fields["sequence_number"] = typ, s.seq
	return namedEvent(typ, fields)
}

// response is the response the proxy ends the stream with: the upstream's
// last snapshot (or one of its own) with status, the output the client
// was sent and the members in set.
func (s *responsesStream) response(status string, set map[string]any) map[string]any {
	m := map[string]any{}
	var snap map[string]json.RawMessage
	if json.Unmarshal(s.snapshot, &snap) == nil && snap != nil {
		for k, v := range snap {
			m[k] = v
		}
	} else {
		m["id"], m["object"], m["created_at"], m["model"] = "resp_"+s.x.id, "response", time.Now().Unix(), s.x.req.Model
	}
	delete(m, "output_text")
	m["status"], m["output"] = status, s.given.json(true)
	for k, v := range set {
		m[k] = v
	}
	return m
}

// end ends the stream as OpenAI ends one it stops: response.incomplete.
func (s *responsesStream) end(finish string, info *cutInfo, _ int) []byte {
	reason := "content_filter"
	if finish == finishLength {
		reason = "max_output_tokens"
	}
	resp := s.response("incomplete", map[string]any{"incomplete_details": map[string]string{"reason": reason}, "streamguard": info})
	return s.event("response.incomplete", map[string]any{"response": resp})
}

// errorEvent is the API's error event, with OpenAI's error object beside
// its members: the SDKs raise an exception on an event whose data has an
// "error".
func (s *responsesStream) errorEvent(e apiError) []byte {
	return s.event("error", map[string]any{"code": e.Code, "message": e.Message, "param": e.Param, "error": e})
}

// passOn is the upstream's error event as it came, or its
// response.failed with the output the client was sent (the text still
// held is not released).
func (s *responsesStream) passOn(ev sseEvent, i any) []byte {
	info, _ := i.(*responsesEventInfo)
	if info == nil || info.ev.Type != "response.failed" {
		return ev.raw
	}
	var r map[string]json.RawMessage
	if json.Unmarshal(info.ev.Response, &r) != nil || r == nil {
		return ev.raw
	}
	r["output"] = mustJSON(s.given.json(true))
	delete(r, "output_text")
	return s.event("response.failed", map[string]any{"response": r})
}
