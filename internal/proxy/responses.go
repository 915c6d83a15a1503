package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// The Responses API (POST /v1/responses, client.responses.create) is
// moderated as chat completions are: the request read into the messages
// the model reads (responses_request.go), the answer's text — reasoning
// items' summaries and reasoning text, messages' output text and
// refusals, function calls' names and arguments — fed to the guard as the
// Qwen3 template lays out an assistant turn, streamed or whole, in
// hold-back or pass-through.
//
// An answer is a list of output items, and a stream spells each one
// several times: as it is added, in deltas, in the done events of its
// parts and of itself, and once more in the response of
// response.completed. Clients read any of these (openai-python's final
// response is the completed event's), so every copy must say what the
// guard judged: an item or part given whole must repeat the text already
// read and may only add to the end of the item being written (the
// addition is judged like a delta); anything else refuses the stream. So
// does any output item or event type that the guard cannot read as the
// model's text (a built-in tool's call, an annotation's text aside).
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
	// output_text (text; its annotations cite sources, no answer text;
	// its logprobs must be empty), refusal, reasoning_text, summary_text.
	outPartShape = closedObject(map[string]*shape{
		"type": scalar, "text": scalar, "refusal": scalar, "annotations": nil, "logprobs": nil,
	})
	// outItemShape is an output item: a message, reasoning or a function
	// call (wireItem.check refuses other types).
	outItemShape = closedObject(map[string]*shape{
		"type": scalar, "id": scalar, "status": scalar, "role": scalar, "phase": scalar,
		"call_id": scalar, "name": scalar, "arguments": scalar, "encrypted_content": scalar,
		"content": arrayOf(outPartShape), "summary": arrayOf(outPartShape),
	})
	// responseShape is a response object. Its other members describe the
	// request and the run (model, tools, usage...); the answer is output
	// (and output_text, where a server adds the SDKs' convenience).
	responseShape = object(map[string]*shape{"output": arrayOf(outItemShape), "output_text": scalar, "status": scalar})
	// responsesEventShape is a streamed event, of any type.
	responsesEventShape = closedObject(map[string]*shape{
		"type": scalar, "sequence_number": scalar, "item_id": scalar, "output_index": scalar, "content_index": scalar,
		"summary_index": scalar, "delta": scalar, "text": scalar, "refusal": scalar, "arguments": scalar, "name": scalar,
		"obfuscation": scalar, "annotation_index": scalar, "annotation": nil, "logprobs": nil,
		"code": scalar, "message": scalar, "param": scalar, "error": nil,
		"item": outItemShape, "part": outPartShape, "response": responseShape,
	})
)

// wirePart is a content or summary part as sent.
type wirePart struct {
	Type     string          `json:"type"`
	Text     *string         `json:"text"`
	Refusal  *string         `json:"refusal"`
	Logprobs json.RawMessage `json:"logprobs"`
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
}

// partTypes are the content part types of each item type the guard reads
// (and, for reasoning, "summary" its summary parts' type).
var partTypes = map[string]map[string]bool{
	"message":       {"output_text": true, "refusal": true},
	"reasoning":     {"reasoning_text": true},
	"function_call": {},
}

// check refuses an item the guard cannot read as the model's text.
func (w *wireItem) check() error {
	types, ok := partTypes[w.Type]
	if !ok {
		return fmt.Errorf("an output item of type %q, which streamguard does not judge (it reads message, reasoning and function_call items)", w.Type)
	}
	for _, p := range w.Content {
		if err := checkPart(&p, types); err != nil {
			return err
		}
	}
	for _, p := range w.Summary {
		if err := checkPart(&p, map[string]bool{"summary_text": w.Type == "reasoning"}); err != nil {
			return err
		}
	}
	if (w.Name == nil) != (w.Type != "function_call") {
		return fmt.Errorf("a %s item with a name, or a function_call without one", w.Type)
	}
	if w.Arguments != nil && w.Type != "function_call" {
		return fmt.Errorf("a %s item with arguments", w.Type)
	}
	return nil
}

func checkPart(p *wirePart, types map[string]bool) error {
	if !types[p.Type] {
		return fmt.Errorf("a part of type %q where streamguard reads %s", p.Type, keys(types))
	}
	if truthy(p.Logprobs) {
		return errors.New("log probabilities in an output part (their tokens are text streamguard does not judge)")
	}
	if p.Type != "refusal" && p.Refusal != nil || p.Type == "refusal" && p.Text != nil {
		return fmt.Errorf("a %s part with text in the wrong field", p.Type)
	}
	return nil
}

func keys(m map[string]bool) string {
	var out []string
	for k, v := range m {
		if v {
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
	typ string
	b   []byte
}

// outItem is an output item as read so far.
type outItem struct {
	typ, id string
	raw     json.RawMessage // as first sent (or as done), for rebuilding it
	parts   []*outPart      // message content, reasoning text
	summary []*outPart      // a reasoning item's summary
	name    string          // a function call's name
	args    []byte          // and arguments
	call    string          // a function call's key for the feeder
	done    bool
	// whole: raw is the item as done (a copy of what was read), given
	// back as it is.
	whole bool
}

// outState is an answer's output items as read so far, in order: the
// upstream's, against which every copy of them is checked, or what the
// client was sent, from which the proxy rebuilds the output of a response
// it ends.
type outState struct {
	items []*outItem
	calls int // function calls begun
}

// newText collects an event's text that the guard has not read yet.
type newText struct{ tf textFields }

func (n *newText) add(kind fieldKind, s string) {
	if s == "" {
		return
	}
	var p **string
	switch kind {
	case fieldReasoning:
		p = &n.tf.ReasoningContent
	case fieldRefusal:
		p = &n.tf.Refusal
	default:
		p = &n.tf.Content
	}
	if *p == nil {
		*p = new(string)
	}
	**p += s
}

func partKind(typ string) fieldKind {
	switch typ {
	case "refusal":
		return fieldRefusal
	case "reasoning_text", "summary_text":
		return fieldReasoning
	}
	return fieldContent
}

// last reports whether it is the item being written (the last one).
func (o *outState) last(it *outItem) bool { return len(o.items) > 0 && o.items[len(o.items)-1] == it }

// add reads an item that was not sent before; all its text is new.
func (o *outState) add(w *wireItem, raw json.RawMessage, n *newText) *outItem {
	it := &outItem{typ: w.Type, id: w.ID, raw: raw}
	if w.Type == "function_call" {
		it.call = fmt.Sprint(o.calls)
		o.calls++
	}
	o.items = append(o.items, it)
	_ = o.extend(it, w, n) // nothing read yet: nothing to contradict
	return it
}

// extend reads w, the whole of item it as sent again: w must repeat the
// text read so far and may add to it only at its end, and only to the
// item being written; what it adds goes to n.
func (o *outState) extend(it *outItem, w *wireItem, n *newText) error {
	if w.Type != it.typ || w.ID != "" && it.id != "" && w.ID != it.id {
		return fmt.Errorf("item %s of type %s sent again as %s of type %s", it.id, it.typ, w.ID, w.Type)
	}
	open := o.last(it)
	grow := func(list *[]*outPart, parts []wirePart) error {
		if len(parts) < len(*list) {
			return fmt.Errorf("item %s sent again with fewer parts", it.id)
		}
		for j := range parts {
			rest, err := o.extendPart(it, list, j, parts[j].Type, parts[j].body(), open)
			if err != nil {
				return err
			}
			n.add(partKind(parts[j].Type), rest)
		}
		return nil
	}
	if err := grow(&it.summary, w.Summary); err != nil {
		return err
	}
	if err := grow(&it.parts, w.Content); err != nil {
		return err
	}
	if it.typ != "function_call" {
		return nil
	}
	name, args := deref(w.Name), deref(w.Arguments)
	var p callPiece
	switch {
	case name == it.name:
	case it.name == "" && len(it.args) == 0 && open:
		p.name, it.name = name, name
	default:
		return fmt.Errorf("function call %s sent again with another name", it.id)
	}
	if !extends(args, it.args) || len(args) > len(it.args) && !open {
		return fmt.Errorf("function call %s sent again with arguments that are not those its deltas sent", it.id)
	}
	p.args = args[len(it.args):]
	it.args = append(it.args, p.args...)
	if p.name != "" || p.args != "" {
		p.key, p.json = it.call, true
		n.tf.tools = append(n.tf.tools, p)
	}
	return nil
}

// extendPart reads part j of a list as sent whole (text full): a new part
// at the end, or one read before, whose text full must extend (only the
// last part of the open item may grow). It returns the new text.
func (o *outState) extendPart(it *outItem, list *[]*outPart, j int, typ, full string, open bool) (string, error) {
	switch {
	case j > len(*list):
		return "", fmt.Errorf("item %s: part %d before part %d", it.id, j, len(*list))
	case j == len(*list):
		if !open && full != "" {
			return "", fmt.Errorf("item %s: a part with text added after the item ended", it.id)
		}
		*list = append(*list, &outPart{typ: typ, b: []byte(full)})
		return full, nil
	}
	p := (*list)[j]
	if p.typ != typ {
		return "", fmt.Errorf("item %s: part %d of type %s sent again as %s", it.id, j, p.typ, typ)
	}
	if !extends(full, p.b) || len(full) > len(p.b) && (!open || j != len(*list)-1) {
		return "", fmt.Errorf("item %s: part %d sent again with text that is not what was sent before", it.id, j)
	}
	rest := full[len(p.b):]
	p.b = append(p.b, rest...)
	return rest, nil
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
		for _, p := range it.parts {
			if p.typ == "output_text" {
				b.Write(p.b)
			}
		}
	}
	return b.String()
}

// readResponse reads a response object's output against o (new items are
// added, the others extended) and checks its output_text.
func (o *outState) readResponse(raw json.RawMessage, n *newText) error {
	var r struct {
		Output     []json.RawMessage `json:"output"`
		OutputText *string           `json:"output_text"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if len(r.Output) < len(o.items) {
		return fmt.Errorf("a response with %d output items where %d were sent", len(r.Output), len(o.items))
	}
	for i, rawItem := range r.Output {
		var w wireItem
		if err := json.Unmarshal(rawItem, &w); err != nil {
			return err
		}
		if err := w.check(); err != nil {
			return err
		}
		if i == len(o.items) {
			if i > 0 {
				o.items[i-1].done = true
			}
			it := o.add(&w, rawItem, n)
			it.whole, it.done = true, true
			continue
		}
		if err := o.extend(o.items[i], &w, n); err != nil {
			return err
		}
		o.items[i].raw, o.items[i].whole, o.items[i].done = rawItem, true, true
	}
	if r.OutputText != nil && *r.OutputText != o.outputText() {
		return errors.New("an output_text that is not the output's text")
	}
	return nil
}

// json rebuilds the output as read: each item as first sent with the text
// read since, and status "incomplete" for an item not done when incomplete
// is set (a response the proxy ends).
func (o *outState) json(incomplete bool) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(o.items))
	for _, it := range o.items {
		if it.whole {
			out = append(out, it.raw)
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(it.raw, &m) != nil || m == nil {
			m = map[string]json.RawMessage{"type": mustJSON(it.typ)}
			if it.id != "" {
				m["id"] = mustJSON(it.id)
			}
		}
		parts := func(list []*outPart) json.RawMessage {
			ps := make([]map[string]any, 0, len(list))
			for _, p := range list {
				pm := map[string]any{"type": p.typ}
				switch p.typ {
				case "refusal":
					pm["refusal"] = string(p.b)
				case "output_text":
					pm["text"], pm["annotations"] = string(p.b), []any{}
				default:
					pm["text"] = string(p.b)
				}
				ps = append(ps, pm)
			}
			return mustJSON(ps)
		}
		switch it.typ {
		case "message":
			m["content"] = parts(it.parts)
		case "reasoning":
			m["summary"] = parts(it.summary)
			if len(it.parts) > 0 {
				m["content"] = parts(it.parts)
			}
		case "function_call":
			m["name"], m["arguments"] = mustJSON(it.name), mustJSON(string(it.args))
		}
		if incomplete && !it.done {
			m["status"] = mustJSON("incomplete")
		}
		out = append(out, mustJSON(m))
	}
	return out
}
