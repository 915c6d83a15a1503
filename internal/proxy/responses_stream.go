package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	Input        *string         `json:"input"`
	Name         *string         `json:"name"`
	Logprobs     json.RawMessage `json:"logprobs"`
	Item         json.RawMessage `json:"item"`
	Part         json.RawMessage `json:"part"`
	Response     json.RawMessage `json:"response"`
}

// responsesEventShape is a streamed event, of any type: its members by
// name (eventSpec says which each type may carry).
var responsesEventShape = closedObject(map[string]*shape{
	"type": scalar, "sequence_number": scalar, "item_id": scalar, "output_index": scalar, "content_index": scalar,
	"summary_index": scalar, "delta": scalar, "text": scalar, "refusal": scalar, "arguments": scalar, "input": scalar,
	"name": scalar, "obfuscation": scalar, "logprobs": nil, "code": scalar, "message": scalar, "param": scalar, "error": nil,
	"item": outItemShape, "part": outPartShape, "response": responseShape,
})

// eventKind is what an event does to the output.
type eventKind uint8

const (
	evSnapshot  eventKind = iota // response.created, .in_progress, .queued: the response so far, no output
	evFinal                      // response.completed, .incomplete: the whole response (a copy)
	evFailed                     // response.failed: passed on (relay's apiErr)
	evError                      // error: passed on
	evKeepalive                  // a heartbeat, no content
	evItemAdded                  // a new item
	evItemDone                   // an item whole (a copy)
	evPartAdded                  // a new part
	evPartDone                   // a part whole (a copy)
	evDelta                      // text added to the last part
	evTextDone                   // a part's text whole (a copy)
	evArgsDelta                  // a call's input added
	evArgsDone                   // a call's input whole (a copy)
)

// eventSpec is what the proxy reads of an event type: its kind, the part
// list it is about (summary or content) and part type, and the members it
// may carry beside type, sequence_number and the indexes.
type eventSpec struct {
	kind    eventKind
	summary bool
	part    string // the part type of a delta or text done
	members []string
}

var eventSpecs = map[string]eventSpec{
	"response.created":     {kind: evSnapshot, members: []string{"response"}},
	"response.in_progress": {kind: evSnapshot, members: []string{"response"}},
	"response.queued":      {kind: evSnapshot, members: []string{"response"}},
	"response.completed":   {kind: evFinal, members: []string{"response"}},
	"response.incomplete":  {kind: evFinal, members: []string{"response"}},
	"response.failed":      {kind: evFailed, members: []string{"response"}},
	"error":                {kind: evError, members: []string{"code", "message", "param", "error"}},
	// OpenAI's heartbeat while a model reasons.
	"keepalive": {kind: evKeepalive},
	"ping":      {kind: evKeepalive},

	"response.output_item.added":            {kind: evItemAdded, members: []string{"item"}},
	"response.output_item.done":             {kind: evItemDone, members: []string{"item"}},
	"response.content_part.added":           {kind: evPartAdded, members: []string{"part"}},
	"response.content_part.done":            {kind: evPartDone, members: []string{"part"}},
	"response.reasoning_part.added":         {kind: evPartAdded, members: []string{"part"}}, // vLLM
	"response.reasoning_part.done":          {kind: evPartDone, members: []string{"part"}},
	"response.reasoning_summary_part.added": {kind: evPartAdded, summary: true, members: []string{"part"}},
	"response.reasoning_summary_part.done":  {kind: evPartDone, summary: true, members: []string{"part"}},

	"response.output_text.delta":            {kind: evDelta, part: "output_text", members: []string{"delta", "logprobs", "obfuscation"}},
	"response.refusal.delta":                {kind: evDelta, part: "refusal", members: []string{"delta", "obfuscation"}},
	"response.reasoning_text.delta":         {kind: evDelta, part: "reasoning_text", members: []string{"delta", "obfuscation"}},
	"response.reasoning_summary_text.delta": {kind: evDelta, summary: true, part: "summary_text", members: []string{"delta", "obfuscation"}},
	"response.output_text.done":             {kind: evTextDone, part: "output_text", members: []string{"text", "logprobs"}},
	"response.refusal.done":                 {kind: evTextDone, part: "refusal", members: []string{"refusal"}},
	"response.reasoning_text.done":          {kind: evTextDone, part: "reasoning_text", members: []string{"text"}},
	"response.reasoning_summary_text.done":  {kind: evTextDone, summary: true, part: "summary_text", members: []string{"text"}},

	"response.function_call_arguments.delta": {kind: evArgsDelta, part: "function_call", members: []string{"delta", "obfuscation"}},
	"response.function_call_arguments.done":  {kind: evArgsDone, part: "function_call", members: []string{"arguments", "name"}},
	"response.custom_tool_call_input.delta":  {kind: evArgsDelta, part: "custom_tool_call", members: []string{"delta", "obfuscation"}},
	"response.custom_tool_call_input.done":   {kind: evArgsDone, part: "custom_tool_call", members: []string{"input", "name"}},
}

// contentMembers are the members an event carries for its type's sake
// (checked against eventSpec.members); the others (type, ids, indexes,
// sequence_number) carry no text.
var contentMembers = []string{"delta", "text", "refusal", "arguments", "input", "name", "logprobs", "obfuscation",
	"code", "message", "param", "error", "item", "part", "response"}

// responsesEventInfo is what a held event keeps (heldEvent.info): the
// event read, and its data.
type responsesEventInfo struct {
	ev   responsesEvent
	spec eventSpec
	data []byte
}

// responsesStream is a streamed Responses API answer.
type responsesStream struct {
	x         *exchange
	finished  bool            // a final response was read
	final     json.RawMessage // its response
	rewritten bool            // a copy was rewritten
	// snapshot is the response of the last response.created (or
	// in_progress, queued): the response the proxy ends starts from it.
	snapshot json.RawMessage
	recv     outState // what the upstream sent
	given    outState // what the client was sent
	seq      int64    // the last sequence number the client got
}

func newResponsesStream(x *exchange) *responsesStream {
	// The text read is kept twice (what the upstream sent, what the
	// client was sent): each within half the response size limit.
	s := &responsesStream{x: x, seq: -1}
	s.recv.limit = defaultMaxRequestBytes * 4 / 2
	if x.h != nil {
		s.recv.limit = x.h.cfg.maxResponseBytes() / 2
	}
	return s
}

// parse reads one event strictly: its data must be a JSON object of a
// type the proxy reads, with the members of that type only, named as its
// "event" field names it, in an order the API sends them (see the
// comment of responses.go). A copy of the text that does not say what
// was read is rewritten (parsedEvent.raw).
func (s *responsesStream) parse(ev sseEvent) parsedEvent {
	d, keys, p, ok := eventJSON(ev, responsesEventShape)
	if !ok {
		return p
	}
	info := &responsesEventInfo{data: d}
	e := &info.ev
	if err := json.Unmarshal(d, e); err != nil {
		return parsedEvent{bad: fmt.Errorf("event data is not a Responses API event: %v", err)}
	}
	if ev.name != "" && ev.name != e.Type {
		return parsedEvent{bad: fmt.Errorf("an event named %q whose data is of type %q", ev.name, e.Type)}
	}
	spec, ok := eventSpecs[e.Type]
	if !ok {
		return parsedEvent{bad: fmt.Errorf("an event of type %q, which streamguard does not judge", e.Type)}
	}
	info.spec = spec
	if err := checkMembers(keys, spec.members); err != nil {
		return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
	}
	p = parsedEvent{isChunk: true, info: info}
	if spec.kind == evSnapshot || spec.kind == evFinal || spec.kind == evFailed {
		if r := bytes.TrimSpace(e.Response); len(r) == 0 || r[0] != '{' {
			return parsedEvent{bad: fmt.Errorf("a %s event without a response object", e.Type)}
		}
	}
	switch spec.kind {
	case evKeepalive:
		return p
	case evError, evFailed:
		p.apiErr = d
		return p
	case evSnapshot:
		var r struct {
			Output     []json.RawMessage `json:"output"`
			OutputText string            `json:"output_text"`
		}
		if err := json.Unmarshal(e.Response, &r); err != nil || len(r.Output) > 0 || r.OutputText != "" || len(s.recv.items) > 0 {
			return parsedEvent{bad: fmt.Errorf("a %s event with output", e.Type)}
		}
		if err := checkEnvelope(e.Response); err != nil {
			return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
		}
		s.snapshot = e.Response
		s.noteID(e.Response)
		return p
	}
	if s.snapshot == nil {
		return parsedEvent{bad: fmt.Errorf("a %s event before response.created", e.Type)}
	}
	var n newText
	var err error
	if spec.kind == evFinal {
		if s.finished {
			return parsedEvent{bad: fmt.Errorf("a %s after the final response", e.Type)}
		}
		s.finished, p.finished = true, true
		s.final = e.Response
		s.noteID(e.Response)
		err = s.recv.readResponse(e.Response, &n)
	} else {
		err = s.recv.step(e, spec, &n)
	}
	switch {
	case errors.Is(err, errMismatch):
		// A rewritten copy costs what it writes, against the same bound
		// as the text read.
		if p.raw, err = s.rewrite(info); err == nil {
			err = s.recv.grow(len(p.raw))
		}
		s.rewritten = true
		if err != nil {
			return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
		}
	case err != nil:
		return parsedEvent{bad: fmt.Errorf("%s: %v", e.Type, err)}
	}
	p.hasText, p.text, p.feed = true, n.fields(), n.feed
	return p
}

// checkMembers refuses an event that carries a member its type does not
// (a done event with a "delta", a delta with "text"), so that no client
// reads text where the proxy did not. keys are the event's.
func checkMembers(keys map[string]bool, allowed []string) error {
	for _, k := range contentMembers {
		if keys[k] && !slices.Contains(allowed, k) {
			return fmt.Errorf("a %q member this event type does not carry", k)
		}
	}
	return nil
}

// step reads an output event into o; the text it adds goes to n.
// errMismatch: a copy that does not say what was read (nothing read).
func (o *outState) step(e *responsesEvent, spec eventSpec, n *newText) error {
	if e.OutputIndex != nil && *e.OutputIndex < 0 {
		return fmt.Errorf("output_index %d", *e.OutputIndex)
	}
	switch spec.kind {
	case evItemAdded:
		w, err := readItem(e.Item)
		if err != nil {
			return err
		}
		it, err := o.add(w, e.Item, n)
		if err == nil && e.OutputIndex != nil {
			if o.at == nil {
				o.at = map[int]*outItem{}
			}
			o.at[*e.OutputIndex] = it
		}
		return err
	case evItemDone:
		w, err := readItem(e.Item)
		if err != nil {
			return err
		}
		// The item it names itself first (Ollama's done event has no
		// item_id, and an index shared with the message before it).
		it := o.ids[w.ID]
		if it == nil || e.ItemID != "" && e.ItemID != w.ID {
			if it, err = o.named(e, false, itemTypes[w.Type].call); err != nil {
				return err
			}
		} else if err := o.sameAt(e, it, itemTypes[w.Type].call); err != nil {
			return err
		}
		if err := it.copy(); err != nil {
			return err
		}
		err = o.extend(it, w, n)
		it.done = true
		if err == nil {
			if grown := len(e.Item) - len(it.raw); grown > 0 {
				if gerr := o.grow(grown); gerr != nil {
					return gerr
				}
			}
			it.raw, it.whole = e.Item, true
		}
		return err
	}
	adding := spec.kind == evPartAdded || spec.kind == evDelta || spec.kind == evArgsDelta
	it, err := o.named(e, adding, spec.kind == evArgsDelta || spec.kind == evArgsDone)
	if err != nil {
		return err
	}
	if spec.kind == evArgsDone {
		if err := it.copy(); err != nil {
			return err
		}
	}
	t := itemTypes[it.typ]
	if spec.kind == evArgsDelta || spec.kind == evArgsDone {
		if it.typ != spec.part {
			return fmt.Errorf("a call's input for a %s item", it.typ)
		}
		if spec.kind == evArgsDone {
			name := e.Name
			if name == nil {
				name = &it.name
			}
			return o.extend(it, &wireItem{Type: it.typ, Name: name, Arguments: e.Arguments, Input: e.Input}, n)
		}
		if e.Delta == nil {
			return errors.New("no delta")
		}
		if err := o.grow(len(*e.Delta)); err != nil {
			return err
		}
		it.args = append(it.args, *e.Delta...)
		if *e.Delta != "" {
			n.addCall(callPiece{key: it.call, args: *e.Delta, json: it.typ == "function_call"})
		}
		return nil
	}
	l, types, idx := &it.content, t.content, e.ContentIndex
	if spec.summary {
		l, types, idx = &it.summary, t.summary, e.SummaryIndex
	}
	var typ, full string
	switch spec.kind {
	case evPartAdded, evPartDone:
		var p wirePart
		if err := json.Unmarshal(e.Part, &p); err != nil {
			return fmt.Errorf("part: %v", err)
		}
		if err := checkPart(&p, types); err != nil {
			return err
		}
		typ, full = p.Type, p.body()
	default:
		typ = spec.part
		if it.typ == "reasoning" && typ == "output_text" {
			typ = "reasoning_text"
		}
		if !types[typ] && !(it.typ == "reasoning" && typ == "reasoning_text" && types["output_text"]) {
			return fmt.Errorf("a %s part in a %s item", spec.part, it.typ)
		}
		if truthy(e.Logprobs) {
			return errors.New("log probabilities (their tokens are text streamguard does not judge)")
		}
		switch {
		case spec.kind == evDelta && e.Delta != nil:
			full = *e.Delta
		case spec.kind == evTextDone && typ == "refusal" && e.Refusal != nil:
			full = *e.Refusal
		case spec.kind == evTextDone && typ != "refusal" && e.Text != nil:
			full = *e.Text
		default:
			return errors.New("no text")
		}
	}
	r, err := l.resolve(idx, spec.kind == evPartAdded)
	if err != nil {
		return err
	}
	kind := partKind(it.typ, typ)
	if r == len(l.parts) {
		// A new part: only at the end of the item being written (and a
		// summary part only before the content).
		if !o.open(it) || spec.summary && len(it.content.parts) > 0 {
			if spec.kind == evPartDone || spec.kind == evTextDone {
				return errMismatch
			}
			return errors.New("a part added out of order")
		}
		if err := o.grow(len(full)); err != nil {
			return err
		}
		l.parts = append(l.parts, &outPart{typ: typ, b: []byte(full)})
		n.add(kind, full)
		return nil
	}
	q := l.parts[r]
	partType := q.typ
	if it.typ == "reasoning" && partType == "output_text" {
		partType = "reasoning_text"
	}
	switch spec.kind {
	case evPartAdded:
		return fmt.Errorf("part %d added twice", r)
	case evDelta:
		if r != len(l.parts)-1 || partType != typ || !o.open(it) || spec.summary && len(it.content.parts) > 0 {
			return errors.New("a delta for a part that is not the one being written")
		}
		if err := o.grow(len(full)); err != nil {
			return err
		}
		q.b = append(q.b, full...)
		n.add(kind, full)
		return nil
	}
	// A part's text whole: what was read, and perhaps more at the end of
	// the part being written. A text done event for a part of another
	// type is no copy of it. The API copies a part twice (its text done,
	// the part done).
	q.copies++
	if q.copies > 2 {
		return fmt.Errorf("part %d sent again more often than the API repeats a part", r)
	}
	if partType != typ && spec.kind == evTextDone {
		return fmt.Errorf("a %s for a %s part", e.Type, q.typ)
	}
	if partType != typ || !extends(full, q.b) || len(full) > len(q.b) && (!o.open(it) || r != len(l.parts)-1 || spec.summary && len(it.content.parts) > 0) {
		return errMismatch
	}
	rest := full[len(q.b):]
	if err := o.grow(len(rest)); err != nil {
		return err
	}
	q.b = append(q.b, rest...)
	n.add(kind, rest)
	return nil
}

// named returns the item an output event is about: the one its item_id
// names, else the one filed at its output_index (the index its
// output_item.added gave it, else its position), else the last. Servers
// number items differently (Ollama gives a call the index of the message
// before it), so the id counts first; but the SDKs file items by the
// index they were added at and apply an event to the item filed at its
// index, so where the index names another item than the id the event is
// refused (sameAt). An event that adds text (adding) may only be about
// the item being written.
func (o *outState) named(e *responsesEvent, adding, callInput bool) (*outItem, error) {
	if len(o.items) == 0 {
		return nil, errors.New("an event for an item before any was added")
	}
	var it *outItem
	switch {
	case e.ItemID != "":
		if it = o.ids[e.ItemID]; it == nil {
			return nil, fmt.Errorf("item_id %q names no item", e.ItemID)
		}
	case e.OutputIndex != nil:
		var err error
		if it, err = o.filed(*e.OutputIndex); err != nil {
			return nil, err
		}
	default:
		it = o.lastItem()
	}
	if adding && !o.open(it) {
		return nil, fmt.Errorf("text for item %q, which is not the one being written", it.id)
	}
	return it, o.sameAt(e, it, callInput)
}

// filed is the item at output_index i.
func (o *outState) filed(i int) (*outItem, error) {
	if it := o.at[i]; it != nil {
		return it, nil
	}
	if i < len(o.items) {
		return o.items[i], nil
	}
	return nil, fmt.Errorf("output_index %d names no item", i)
}

// sameAt refuses an event whose output_index names another item than it,
// unless the event is about a call's input and the item at the index is
// no call (the SDKs pass it over there: Ollama's case).
func (o *outState) sameAt(e *responsesEvent, it *outItem, callInput bool) error {
	if e.OutputIndex == nil {
		return nil
	}
	at, err := o.filed(*e.OutputIndex)
	if err != nil {
		return err
	}
	if at != it && !(callInput && !itemTypes[at.typ].call) {
		return fmt.Errorf("an event for item %q at the output_index of another item", it.id)
	}
	return nil
}

// copied is the item a copy event is about (as step found it).
func (o *outState) copied(e *responsesEvent, spec eventSpec) (*outItem, error) {
	if spec.kind == evItemDone {
		var w struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		_ = json.Unmarshal(e.Item, &w)
		if it := o.ids[w.ID]; it != nil && (e.ItemID == "" || e.ItemID == w.ID) {
			return it, nil
		}
		return o.named(e, false, itemTypes[w.Type].call)
	}
	return o.named(e, false, spec.kind == evArgsDone)
}

// copy counts a copy event of the whole item (its done event, a call's
// input done): the API sends each once. More would let a few bytes of the
// upstream make the proxy write the item again and again, each copy that
// disagrees rewritten whole.
func (it *outItem) copy() error {
	it.copies++
	if it.copies > 2 {
		return fmt.Errorf("item %q sent again more often than the API repeats an item", it.id)
	}
	return nil
}

// rewrite is a copy event (a done event, the final response) that does
// not say what was read, rewritten to say it: the item, part, text or
// input as read, the final response's output as read.
func (s *responsesStream) rewrite(info *responsesEventInfo) ([]byte, error) {
	e := &info.ev
	var m map[string]any
	if err := json.Unmarshal(info.data, &m); err != nil {
		return nil, err
	}
	switch info.spec.kind {
	case evFinal:
		var r map[string]json.RawMessage
		if err := json.Unmarshal(e.Response, &r); err != nil {
			return nil, err
		}
		delete(r, "output_text")
		// Items that were not given whole take the response's status.
		var status string
		_ = json.Unmarshal(r["status"], &status)
		out := s.recv.json(false)
		for i, it := range s.recv.items {
			var im map[string]json.RawMessage
			if !it.whole && status == "completed" && json.Unmarshal(out[i], &im) == nil && im["status"] != nil {
				im["status"] = mustJSON("completed")
				out[i] = mustJSON(im)
			}
		}
		r["output"] = mustJSON(out)
		m["response"] = r
	default:
		it, err := s.recv.copied(e, info.spec)
		if err != nil {
			return nil, err
		}
		switch info.spec.kind {
		case evItemDone:
			m["item"] = it.json(false)
		case evArgsDone:
			key := "arguments"
			if it.typ == "custom_tool_call" {
				key = "input"
			}
			m[key] = string(it.args)
			if _, ok := m["name"]; ok {
				m["name"] = it.name
			}
		default:
			l, idx := &it.content, e.ContentIndex
			if info.spec.summary {
				l, idx = &it.summary, e.SummaryIndex
			}
			r, err := l.resolve(idx, false)
			if err != nil || r >= len(l.parts) {
				return nil, errors.New("a copy of a part that was never read")
			}
			q := l.parts[r]
			switch {
			case info.spec.kind == evPartDone:
				m["part"] = q.json()
			case info.spec.part == "refusal":
				m["refusal"] = string(q.b)
				delete(m, "text")
			default:
				m["text"] = string(q.b)
				delete(m, "refusal")
			}
		}
	}
	data := mustJSON(m)
	info.data = data
	info.ev = responsesEvent{}
	if err := json.Unmarshal(data, &info.ev); err != nil {
		return nil, err
	}
	return namedEvent(e.Type, m), nil
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
	switch info.spec.kind {
	case evFinal:
		_ = s.given.readResponse(info.ev.Response, &n)
	case evSnapshot, evKeepalive, evError, evFailed:
	default:
		_ = s.given.step(&info.ev, info.spec, &n) // read before, in recv: it reads
	}
}

// partial is a delta event's text before the cut, as a delta event of
// its own (a delta carries the text of one field; other events are not
// split).
func (s *responsesStream) partial(e *heldEvent, cut int) []byte {
	info, _ := e.info.(*responsesEventInfo)
	if info == nil || info.spec.kind != evDelta {
		return nil
	}
	pt := e.text.partial(cut)
	t := pt[fieldContent] + pt[fieldReasoning] + pt[fieldRefusal]
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

// response is the response the proxy ends the stream with: the envelope
// of the upstream's last snapshot (or one of its own) with status, the
// output the client was sent and the members in set.
func (s *responsesStream) response(status string, set map[string]any) map[string]any {
	var m map[string]any
	if s.snapshot != nil {
		m = envelope(s.snapshot, s.x.body)
	} else {
		m = envelope(nil, s.x.body)
		m["id"], m["object"], m["created_at"], m["model"] = "resp_"+s.x.id, "response", time.Now().Unix(), s.x.req.Model
	}
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
// response.failed as a response of the proxy's (envelope, with the
// upstream's error, passed on as chat completions pass an upstream's
// error) with the output the client was sent (the text still held is not
// released).
func (s *responsesStream) passOn(ev sseEvent, i any) []byte {
	info, _ := i.(*responsesEventInfo)
	if info == nil || info.ev.Type != "response.failed" {
		return ev.raw
	}
	m := envelope(info.ev.Response, s.x.body)
	var r struct {
		Error json.RawMessage `json:"error"`
	}
	_ = json.Unmarshal(info.ev.Response, &r)
	m["status"], m["output"], m["error"] = "failed", s.given.json(true), r.Error
	return s.event("response.failed", map[string]any{"response": m})
}

// noteID notes the id of the answer relayed (exchange.respID).
func (s *responsesStream) noteID(resp json.RawMessage) {
	if id := responseID(resp); id != "" && s.x != nil {
		s.x.respID = id
	}
}

// allowed remembers the conversation the answer ended (conversations).
func (s *responsesStream) allowed() {
	id := responseID(s.final)
	if id == "" {
		id = responseID(s.snapshot)
	}
	s.x.remember(id, &s.recv, s.rewritten)
}

// responseID is a response object's id.
func responseID(raw json.RawMessage) string {
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.ID
}
