package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// The Responses API (POST /v1/responses, client.responses.create) is
// moderated as chat completions are: the request read into the messages
// the model reads (responses_request.go), the answer's text — reasoning
// items' summaries and reasoning text, messages' output text and
// refusals, function and custom tool calls' names and input — fed to the
// guard as the Qwen3 template lays out an assistant turn, streamed or
// whole, in hold-back or pass-through.
//
// An answer is a list of output items, and a stream spells each one
// several times: as it is added, in deltas, in the done events of its
// parts and of itself, and once more in the response of
// response.completed. Clients read any of these (openai-python's final
// response is the completed event's), so every copy must say what the
// guard judged. A copy may add text at the end of the item being written
// (that text is judged like a delta); a copy that says anything else —
// other text, items in another order or under other ids, as servers that
// rebuild the final response from the whole text send it — is rewritten
// to what was judged before it goes out. Text arrives only in order: a
// delta adds to the last part of the item being written. Any output item,
// part, event type or member the guard cannot read as the model's text (a
// built-in tool's call, an annotation) refuses the stream.
//
// A cut ends the stream the way OpenAI ends one it filters: a
// response.incomplete event whose response has status "incomplete",
// incomplete_details.reason "content_filter" ("max_output_tokens" when
// the answer outgrew the guard's stream), and as output what the client
// was sent. A whole answer that is flagged is refused with an error, or
// (tenant refusal "completion") returned so cut.

// responsesAPI is the Responses API (see above).
type responsesAPI struct{}

func (responsesAPI) path() string  { return "/responses" }
func (responsesAPI) param() string { return "input" }
func (responsesAPI) parseRequest(body []byte) (*chatRequest, error) {
	return parseResponsesRequest(body)
}
func (responsesAPI) newStream(x *exchange) streamAPI               { return newResponsesStream(x) }
func (responsesAPI) refuse(x *exchange, msg string, info *cutInfo) { x.refuseResponse(msg, info) }
func (responsesAPI) judgeWhole(x *exchange, s Stream, resp *http.Response, body []byte) {
	x.judgeWholeResponse(s, resp, body)
}

var (
	// outPartShape is a content or summary part of an output item:
	// output_text (text; annotations and logprobs must be empty),
	// refusal, reasoning_text, summary_text.
	outPartShape = closedObject(map[string]*shape{
		"type": scalar, "text": scalar, "refusal": scalar, "annotations": nil, "logprobs": nil,
	})
	// outItemShape is an output item: a message, reasoning, a function or
	// custom tool call (wireItem.check refuses other types). Beside the
	// text: ids, status, OpenAI's phase, caller (who made a call: ids) and
	// namespace, OpenRouter's
	// reasoning signature and format, the encrypted reasoning, and the
	// event members vLLM repeats in an item.
	outItemShape = closedObject(map[string]*shape{
		"type": scalar, "id": scalar, "status": scalar, "role": scalar, "phase": scalar,
		"call_id": scalar, "name": scalar, "arguments": scalar, "input": scalar, "encrypted_content": scalar,
		"namespace": scalar, "caller": nil,
		"signature": scalar, "format": scalar, "item_id": scalar, "output_index": scalar, "sequence_number": scalar,
		"content": arrayOf(outPartShape), "summary": arrayOf(outPartShape),
	})
	// responseShape is a response object. Its other members describe the
	// request and the run (model, tools, usage...); the answer is output
	// (and output_text, where a server adds the SDKs' convenience). vLLM's
	// input_messages and output_messages spell the conversation and the
	// answer: refused unless empty (checkEnvelope).
	responseShape = object(map[string]*shape{"output": arrayOf(outItemShape), "output_text": scalar, "status": scalar,
		"input_messages": nil, "output_messages": nil})
)

// checkEnvelope refuses a response object whose members beside its output
// spell the answer.
func checkEnvelope(raw json.RawMessage) error {
	var r struct {
		In  json.RawMessage `json:"input_messages"`
		Out json.RawMessage `json:"output_messages"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if truthy(r.In) || truthy(r.Out) {
		return errors.New("a response with input_messages or output_messages (text streamguard does not judge)")
	}
	return nil
}

// A response the proxy rebuilds (at a cut) has none of the upstream's text
// beyond what was judged: of the upstream's response only the members
// that name it (responseIdentity), and the request's own members echoed
// as OpenAI echoes them (responseEcho), taken from the client's request.
var (
	responseIdentity = []string{"id", "object", "created_at", "model", "usage"}
	responseEcho     = []string{"instructions", "metadata", "tools", "tool_choice", "temperature", "top_p",
		"max_output_tokens", "max_tool_calls", "parallel_tool_calls", "reasoning", "text", "truncation", "service_tier",
		"store", "user", "background", "safety_identifier", "prompt_cache_key", "top_logprobs"}
)

// envelope is the members a rebuilt response keeps: responseIdentity's of
// the upstream's response raw, responseEcho's of the client's request.
func envelope(raw json.RawMessage, request []byte) map[string]any {
	m := map[string]any{}
	for _, src := range []struct {
		data []byte
		keys []string
	}{{raw, responseIdentity}, {request, responseEcho}} {
		var all map[string]json.RawMessage
		_ = json.Unmarshal(src.data, &all) // read by strictJSON before
		for _, k := range src.keys {
			if v, ok := all[k]; ok {
				m[k] = v
			}
		}
	}
	return m
}

// wirePart is a content or summary part as sent.
type wirePart struct {
	Type        string          `json:"type"`
	Text        *string         `json:"text"`
	Refusal     *string         `json:"refusal"`
	Annotations json.RawMessage `json:"annotations"`
	Logprobs    json.RawMessage `json:"logprobs"`
}

// body is the part's text: a refusal's refusal, any other part's text.
func (p *wirePart) body() string {
	if p.Type == "refusal" {
		return deref(p.Refusal)
	}
	return deref(p.Text)
}

// wireItem is an output item as sent.
type wireItem struct {
	Type      string     `json:"type"`
	ID        string     `json:"id"`
	Content   []wirePart `json:"content"`
	Summary   []wirePart `json:"summary"`
	Name      *string    `json:"name"`
	Arguments *string    `json:"arguments"`
	Input     *string    `json:"input"`
}

// itemType is what the guard reads of an output item type: its content
// and summary part types, or the name and input of a tool call.
type itemType struct {
	content, summary map[string]bool
	call             bool
}

// itemTypes are the output item types the guard reads. A reasoning item's
// parts are reasoning (SGLang opens one with an output_text part).
var itemTypes = map[string]itemType{
	"message":          {content: map[string]bool{"output_text": true, "refusal": true}},
	"reasoning":        {content: map[string]bool{"reasoning_text": true, "output_text": true}, summary: map[string]bool{"summary_text": true}},
	"function_call":    {call: true},
	"custom_tool_call": {call: true},
}

// callText is a call's input: a function's arguments (JSON text), a custom
// tool's free-form input.
func (w *wireItem) callText() *string {
	if w.Type == "custom_tool_call" {
		return w.Input
	}
	return w.Arguments
}

// check refuses an item the guard cannot read as the model's text.
func (w *wireItem) check() error {
	t, ok := itemTypes[w.Type]
	if !ok {
		return fmt.Errorf("an output item of type %q, which streamguard does not judge (it reads message, reasoning, function_call and custom_tool_call items)", w.Type)
	}
	for _, p := range w.Content {
		if err := checkPart(&p, t.content); err != nil {
			return err
		}
	}
	for _, p := range w.Summary {
		if err := checkPart(&p, t.summary); err != nil {
			return err
		}
	}
	switch {
	case (w.Name != nil) != t.call:
		return fmt.Errorf("a %s item with a name, or a call without one", w.Type)
	case w.Arguments != nil && w.Type != "function_call", w.Input != nil && w.Type != "custom_tool_call":
		return fmt.Errorf("a %s item with another item's input", w.Type)
	}
	return nil
}

func checkPart(p *wirePart, types map[string]bool) error {
	switch {
	case !types[p.Type]:
		return fmt.Errorf("a part of type %q where streamguard reads %s", p.Type, keys(types))
	case truthy(p.Logprobs):
		return errors.New("log probabilities in an output part (their tokens are text streamguard does not judge)")
	case truthy(p.Annotations):
		return errors.New("annotations in an output part (cited titles and URLs are text streamguard does not judge)")
	case p.Type != "refusal" && p.Refusal != nil || p.Type == "refusal" && p.Text != nil:
		return fmt.Errorf("a %s part with text in the wrong field", p.Type)
	}
	return nil
}

func keys(m map[string]bool) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " and ")
}

// outPart is a part as read so far. Its text grows by appends (a long
// answer comes in many small deltas).
type outPart struct {
	typ    string
	b      []byte
	copies int // copy events read (responsesStream: at most two)
}

// partList is an item's content or summary parts as read so far. Servers
// number the parts of each item from 0, or (vLLM with gpt-oss) across the
// answer: base is the index its first part came with (0 when the item
// came with parts).
type partList struct {
	parts []*outPart
	base  int
	based bool
}

// resolve turns the part index an event gives (nil: none) into a
// position in the list, len(parts) for a part not read yet. An event that
// adds a part without an index adds one; one that names a part without an
// index names the last.
func (l *partList) resolve(idx *int, adding bool) (int, error) {
	n := len(l.parts)
	if idx == nil {
		if adding || n == 0 {
			return n, nil
		}
		return n - 1, nil
	}
	if *idx < 0 {
		return 0, fmt.Errorf("part index %d", *idx)
	}
	if !l.based {
		// The first index an item's parts come with is their base; parts
		// that came without one (in the item as added) count from 0.
		l.based = true
		if n == 0 {
			l.base = *idx
		}
	}
	r := *idx - l.base
	if r < 0 || r > n {
		return 0, fmt.Errorf("part index %d where the item has %d parts", *idx, n)
	}
	return r, nil
}

// outItem is an output item as read so far.
type outItem struct {
	typ, id          string
	raw              json.RawMessage // as first sent (or as done), for rebuilding it
	content, summary partList
	name             string // a call's name
	args             []byte // and its arguments or input
	call             string // a call's key for the feeder
	copies           int    // copy events of the whole item read (at most two)
	done             bool
	// whole: raw is the item as done, checked to say what was read:
	// given back as it is.
	whole bool
}

// outState is an answer's output items as read so far, in order: the
// upstream's, against which every copy of them is checked, or what the
// client was sent, from which the proxy rebuilds the output of a response
// it ends.
type outState struct {
	items []*outItem
	ids   map[string]*outItem
	// at is each item by the output_index its output_item.added gave it:
	// where openai-python files it, and sends the events that name that
	// index.
	at    map[int]*outItem
	calls int   // tool calls begun
	size  int64 // bytes read: text, and each item's JSON
	limit int64 // its bound; 0: none
}

// itemOverhead and partOverhead are what an item and a part cost beyond
// their text, so that many small (or empty) ones count too.
const (
	itemOverhead = 256
	partOverhead = 64
)

// newText collects an event's text that the guard has not read yet, in
// the order a client reads it (an item's parts, items in turn).
type newText struct {
	segs []segment
}

// segment is text of one field, or a piece of a call.
type segment struct {
	kind fieldKind
	text strings.Builder
	call *callPiece
}

func (n *newText) add(kind fieldKind, s string) {
	if s == "" {
		return
	}
	if k := len(n.segs); k > 0 && n.segs[k-1].call == nil && n.segs[k-1].kind == kind {
		n.segs[k-1].text.WriteString(s)
		return
	}
	n.segs = append(n.segs, segment{kind: kind})
	n.segs[len(n.segs)-1].text.WriteString(s)
}

func (n *newText) addCall(p callPiece) { n.segs = append(n.segs, segment{kind: fieldTool, call: &p}) }

// fields is the text as textFields, for the checks that ask whether an
// event carries text (feed feeds it).
func (n *newText) fields() textFields {
	var tf textFields
	for i := range n.segs {
		sg := &n.segs[i]
		switch {
		case sg.call != nil:
			tf.tools = append(tf.tools, *sg.call)
		case sg.kind == fieldReasoning:
			tf.ReasoningContent = ptrTo(sg.text.String())
		case sg.kind == fieldRefusal:
			tf.Refusal = ptrTo(sg.text.String())
		default:
			tf.Content = ptrTo(sg.text.String())
		}
	}
	return tf
}

func ptrTo(s string) *string { return &s }

// feed feeds the text in order.
func (n *newText) feed(f *feeder, ev *eventText) error {
	for i := range n.segs {
		sg := &n.segs[i]
		switch {
		case sg.call != nil:
			if err := f.toolCall(ev, *sg.call); err != nil {
				return err
			}
		case sg.kind == fieldReasoning:
			f.addReasoning(ev, sg.text.String())
		case sg.kind == fieldRefusal:
			f.addRefusal(ev, sg.text.String())
		default:
			f.addContent(ev, sg.text.String())
		}
	}
	return nil
}

// partKind is the field a part's text is fed as.
func partKind(item, part string) fieldKind {
	switch {
	case item == "reasoning":
		return fieldReasoning
	case part == "refusal":
		return fieldRefusal
	}
	return fieldContent
}

// grow counts n more bytes of text read.
func (o *outState) grow(n int) error {
	o.size += int64(n)
	if o.limit > 0 && o.size > o.limit {
		return fmt.Errorf("the answer's text grew past %d bytes", o.limit)
	}
	return nil
}

func (o *outState) lastItem() *outItem {
	if len(o.items) == 0 {
		return nil
	}
	return o.items[len(o.items)-1]
}

// open reports whether it is the item being written: the last, not done.
func (o *outState) open(it *outItem) bool { return it == o.lastItem() && !it.done }

// add reads an item that was not sent before; all its text is new.
func (o *outState) add(w *wireItem, raw json.RawMessage, n *newText) (*outItem, error) {
	if last := o.lastItem(); last != nil {
		last.done = true
	}
	if w.ID != "" && o.ids[w.ID] != nil {
		return nil, fmt.Errorf("item %q added twice", w.ID)
	}
	if err := o.grow(len(raw) + itemOverhead); err != nil {
		return nil, err
	}
	it := &outItem{typ: w.Type, id: w.ID, raw: raw}
	if w.ID != "" {
		if o.ids == nil {
			o.ids = map[string]*outItem{}
		}
		o.ids[w.ID] = it
	}
	if itemTypes[w.Type].call {
		it.call = fmt.Sprint(o.calls)
		o.calls++
	}
	o.items = append(o.items, it)
	if err := o.extend(it, w, n); err != nil {
		return nil, err
	}
	return it, nil
}

// errMismatch is a copy of the text that does not say what was read.
var errMismatch = errors.New("a copy of the answer's text that is not what was read")

// extend reads w, the whole of item it as sent again (ids aside): w must
// repeat the text read so far and may add to it only at its end, and only
// to the item being written; what it adds goes to n. errMismatch, with
// nothing read, when it does not.
func (o *outState) extend(it *outItem, w *wireItem, n *newText) error {
	if w.Type != it.typ {
		return errMismatch
	}
	open := o.open(it)
	// check returns the bytes parts add to list l, or -1 when they do not
	// extend it.
	check := func(l *partList, parts []wirePart) int {
		if len(parts) < len(l.parts) {
			return -1
		}
		added := 0
		for j, p := range parts {
			full := p.body()
			if j >= len(l.parts) {
				if !open && full != "" {
					return -1
				}
				added += len(full) + partOverhead
				continue
			}
			q := l.parts[j]
			if q.typ != p.Type || !extends(full, q.b) || len(full) > len(q.b) && (!open || j != len(l.parts)-1) {
				return -1
			}
			added += len(full) - len(q.b)
		}
		return added
	}
	summary, content := check(&it.summary, w.Summary), check(&it.content, w.Content)
	// The summary comes before the content: it may not grow once the
	// content began.
	if summary < 0 || content < 0 || summary > 0 && len(it.content.parts) > 0 {
		return errMismatch
	}
	added := summary + content
	var name, args string
	if itemTypes[it.typ].call {
		name, args = deref(w.Name), deref(w.callText())
		switch {
		case name != it.name && (it.name != "" || len(it.args) > 0 || !open):
			return errMismatch
		case !extends(args, it.args) || len(args) > len(it.args) && !open:
			return errMismatch
		}
		added += len(args) - len(it.args)
		if name != it.name {
			added += len(name)
		}
	}
	if err := o.grow(added); err != nil {
		return err
	}
	apply := func(l *partList, parts []wirePart) {
		for j, p := range parts {
			full := p.body()
			if j >= len(l.parts) {
				l.parts = append(l.parts, &outPart{typ: p.Type, b: []byte(full)})
				n.add(partKind(it.typ, p.Type), full)
				continue
			}
			q := l.parts[j]
			rest := full[len(q.b):]
			q.b = append(q.b, rest...)
			n.add(partKind(it.typ, p.Type), rest)
		}
	}
	apply(&it.summary, w.Summary)
	apply(&it.content, w.Content)
	if itemTypes[it.typ].call {
		var p callPiece
		if name != it.name {
			p.name, it.name = name, name
		}
		p.args = args[len(it.args):]
		it.args = append(it.args, p.args...)
		if p.name != "" || p.args != "" {
			p.key, p.json = it.call, it.typ == "function_call"
			n.addCall(p)
		}
	}
	return nil
}

// extends reports whether s begins with b.
func extends(s string, b []byte) bool { return len(s) >= len(b) && s[:len(b)] == string(b) }

// outputText is what the SDKs make of a response's output_text: the
// messages' output_text parts, joined.
func (o *outState) outputText() string {
	var b strings.Builder
	for _, it := range o.items {
		if it.typ != "message" {
			continue
		}
		for _, p := range it.content.parts {
			if p.typ == "output_text" {
				b.Write(p.b)
			}
		}
	}
	return b.String()
}

// readResponse reads a response object's output against o: items read
// before extended, new ones added. errMismatch, with nothing read, when
// it does not say what was read (or its output_text does not).
func (o *outState) readResponse(raw json.RawMessage, n *newText) error {
	if err := checkEnvelope(raw); err != nil {
		return err
	}
	var r struct {
		Output     []json.RawMessage `json:"output"`
		OutputText *string           `json:"output_text"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	ws := make([]*wireItem, len(r.Output))
	for i, rawItem := range r.Output {
		w, err := readItem(rawItem)
		if err != nil {
			return err
		}
		ws[i] = w
	}
	if len(ws) < len(o.items) {
		return errMismatch
	}
	// Checked whole before anything is read: a trial on copies.
	trial := outState{limit: o.limit, size: o.size, calls: o.calls, ids: map[string]*outItem{}, at: map[int]*outItem{}}
	clones := map[*outItem]*outItem{}
	for _, it := range o.items {
		c := it.clone()
		clones[it] = c
		trial.items = append(trial.items, c)
		if c.id != "" {
			trial.ids[c.id] = c
		}
	}
	for i, it := range o.at {
		trial.at[i] = clones[it]
	}
	var tn newText
	for i, w := range ws {
		if i < len(trial.items) {
			if err := trial.extend(trial.items[i], w, &tn); err != nil {
				return err
			}
			continue
		}
		if _, err := trial.add(w, r.Output[i], &tn); err != nil {
			return err
		}
	}
	if r.OutputText != nil && *r.OutputText != trial.outputText() {
		return errMismatch
	}
	for i, it := range trial.items {
		if !it.whole || len(it.raw) != len(r.Output[i]) {
			if err := trial.grow(len(r.Output[i])); err != nil {
				return err
			}
		}
		it.raw, it.whole, it.done = r.Output[i], true, true
	}
	*o = trial
	*n = tn
	return nil
}

func (it *outItem) clone() *outItem {
	c := *it
	c.args = append([]byte(nil), it.args...)
	for _, l := range []*partList{&c.content, &c.summary} {
		ps := make([]*outPart, len(l.parts))
		for i, p := range l.parts {
			ps[i] = &outPart{typ: p.typ, b: append([]byte(nil), p.b...), copies: p.copies}
		}
		l.parts = ps
	}
	return &c
}

func readItem(raw json.RawMessage) (*wireItem, error) {
	var w wireItem
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("item: %v", err)
	}
	return &w, w.check()
}

// partJSON is a part as the proxy writes it.
func (p *outPart) json() map[string]any {
	pm := map[string]any{"type": p.typ}
	switch p.typ {
	case "refusal":
		pm["refusal"] = string(p.b)
	case "output_text":
		pm["text"], pm["annotations"] = string(p.b), []any{}
	default:
		pm["text"] = string(p.b)
	}
	return pm
}

// json rebuilds the item as read: as first sent, with its text as read
// (every part list and call input replaced), status "incomplete" when it
// is not done and incomplete is set (a response the proxy ends). An item
// given whole (checked) goes as it came.
func (it *outItem) json(incomplete bool) json.RawMessage {
	if it.whole {
		return it.raw
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(it.raw, &m) != nil || m == nil {
		m = map[string]json.RawMessage{"type": mustJSON(it.typ)}
		if it.id != "" {
			m["id"] = mustJSON(it.id)
		}
	}
	parts := func(l *partList) json.RawMessage {
		ps := make([]map[string]any, 0, len(l.parts))
		for _, p := range l.parts {
			ps = append(ps, p.json())
		}
		return mustJSON(ps)
	}
	switch it.typ {
	case "message":
		m["content"] = parts(&it.content)
	case "reasoning":
		m["summary"], m["content"] = parts(&it.summary), parts(&it.content)
	case "function_call":
		m["name"], m["arguments"] = mustJSON(it.name), mustJSON(string(it.args))
	case "custom_tool_call":
		m["name"], m["input"] = mustJSON(it.name), mustJSON(string(it.args))
	}
	if incomplete && !it.done {
		m["status"] = mustJSON("incomplete")
	}
	return mustJSON(m)
}

// json rebuilds the output as read (outItem.json).
func (o *outState) json(incomplete bool) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(o.items))
	for _, it := range o.items {
		out = append(out, it.json(incomplete))
	}
	return out
}

// assistant is the output read as the assistant's chat message: the
// reasoning items' text as its reasoning, the messages' parts as its
// content, the calls as its tool calls.
func (o *outState) assistant() json.RawMessage {
	var reasoning []string
	var content []map[string]any
	var calls []map[string]any
	for _, it := range o.items {
		switch it.typ {
		case "reasoning":
			for _, l := range []*partList{&it.summary, &it.content} {
				for _, p := range l.parts {
					reasoning = append(reasoning, string(p.b))
				}
			}
		case "message":
			for _, p := range it.content.parts {
				content = append(content, p.json())
			}
		case "function_call":
			calls = append(calls, map[string]any{"type": "function", "function": map[string]any{"name": it.name, "arguments": string(it.args)}})
		case "custom_tool_call":
			calls = append(calls, map[string]any{"type": "custom", "custom": map[string]any{"name": it.name, "input": string(it.args)}})
		}
	}
	m := map[string]any{"role": "assistant", "content": content}
	if len(reasoning) > 0 {
		m["reasoning_content"] = strings.Join(reasoning, "\n")
	}
	if len(calls) > 0 {
		m["tool_calls"] = calls
	}
	return mustJSON(m)
}
