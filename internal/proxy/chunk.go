package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// chunkMeta is the metadata of a streamed chunk, kept in the chunks the
// proxy writes itself.
type chunkMeta struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint,omitempty"`
}

// textFields are the text fields of a delta or message that the guard
// judges; a nil pointer is a field that is absent.
type textFields struct {
	Content          *string `json:"content"`
	ReasoningContent *string `json:"reasoning_content"`
	Reasoning        *string `json:"reasoning"`
	Refusal          *string `json:"refusal"`
	// ReasoningDetails is OpenRouter's structured copy of the reasoning:
	// encrypted blobs a client cannot read, and the reasoning's text or
	// summary, which check accepts only as the judged reasoning itself.
	ReasoningDetails []reasoningDetail `json:"reasoning_details"`
	// ToolCalls and the legacy FunctionCall are judged too (toolCall);
	// check reads them into tools.
	ToolCalls    []wireToolCall `json:"tool_calls"`
	FunctionCall *wireFunction  `json:"function_call"`
	tools        []callPiece
}

type reasoningDetail struct {
	Type    string  `json:"type"`
	Text    *string `json:"text"`
	Summary *string `json:"summary"`
}

// reasoning returns the reasoning text; servers name the field
// reasoning_content or reasoning, and some send both with the same text
// (check refuses both with different text).
func (f *textFields) reasoning() string {
	switch {
	case f.ReasoningContent != nil:
		return *f.ReasoningContent
	case f.Reasoning != nil:
		return *f.Reasoning
	}
	return ""
}

// check refuses fields the guard could not judge as one text (a
// reasoning_content and a reasoning that differ), and reads the tool calls
// of a delta or, whole, a message.
func (f *textFields) check(whole bool) error {
	if f.ReasoningContent != nil && f.Reasoning != nil && *f.ReasoningContent != *f.Reasoning {
		return errors.New("reasoning_content and reasoning differ")
	}
	var err error
	if f.tools, err = callPieces(f.ToolCalls, f.FunctionCall, whole); err != nil {
		return fmt.Errorf("tool calls: %v", err)
	}
	// reasoning_details: readable only as a copy of the judged reasoning.
	var text strings.Builder
	for _, d := range f.ReasoningDetails {
		if d.Type == "reasoning.encrypted" {
			if d.Text != nil && *d.Text != "" || d.Summary != nil && *d.Summary != "" {
				return errors.New("reasoning_details: an encrypted entry with text")
			}
			continue
		}
		for _, t := range []*string{d.Text, d.Summary} {
			if t != nil {
				text.WriteString(*t)
			}
		}
	}
	if text.Len() > 0 && text.String() != f.reasoning() {
		return errors.New("reasoning_details whose text is not the reasoning beside it")
	}
	return nil
}

// empty reports whether the fields carry no text (no tool call either).
func (f *textFields) empty() bool {
	return f.reasoning() == "" && (f.Content == nil || *f.Content == "") && (f.Refusal == nil || *f.Refusal == "") && len(f.tools) == 0
}

// feedFields feeds the text of one delta or message (checked): reasoning,
// then content, then refusal (a refusal comes alone in practice), then
// tool calls, in the template's order. An error is tool calls the guard
// cannot read as clients assemble them (toolCall): the answer is refused.
func feedFields(f *feeder, ev *eventText, t *textFields) error {
	switch r := t.reasoning(); {
	case r == "" || !f.reasoningDone:
		f.addReasoning(ev, r)
	case strings.Trim(r, "\n") == "":
		// Newlines after the reasoning's end: the template strips them.
		f.drop(ev, fieldReasoning, r)
	default:
		// A chat client files it with the reasoning before, which the
		// template writes ahead of the answer: judged where it came, the
		// guard would read other ids than the model is shown. Refused, as
		// tool-call pieces out of order are. (A Responses API reasoning
		// item after a message is an item of its own, judged in the
		// order the client reads the items.)
		return errors.New("reasoning after the answer's text or a tool call (a client joins it to the reasoning before, which comes first)")
	}
	if t.Content != nil {
		f.addContent(ev, *t.Content)
	}
	if t.Refusal != nil {
		f.addRefusal(ev, *t.Refusal)
	}
	for _, p := range t.tools {
		if err := f.toolCall(ev, p); err != nil {
			return err
		}
	}
	return nil
}

// checkLegacyText refuses a choice's legacy "text" (the completions API's
// field, which some clients still show) unless it only repeats the
// content judged beside it (Together sends both).
func checkLegacyText(text *string, t *textFields) error {
	if text == nil || *text == "" || t.Content != nil && *t.Content == *text {
		return nil
	}
	return errors.New(`a choice's "text" that is not its content`)
}

type wireChoice struct {
	Index        int        `json:"index"`
	Delta        textFields `json:"delta"`
	Text         *string    `json:"text"`
	FinishReason *string    `json:"finish_reason"`
}

type wireChunk struct {
	chunkMeta
	Choices []wireChoice    `json:"choices"`
	Error   json.RawMessage `json:"error"`
	Usage   json.RawMessage `json:"usage"`
}

// parsedEvent is what the relay needs from one upstream event.
type parsedEvent struct {
	done     bool // data: [DONE]
	isChunk  bool // a chunk (an event whose data is a JSON object)
	meta     chunkMeta
	hasText  bool            // the chunk has a choice
	text     textFields      // the choice's text
	finished bool            // finish_reason set
	apiErr   json.RawMessage // an error object sent inside the stream
	usage    json.RawMessage // the chunk's usage object, when not null
	// bad is why the event cannot be moderated: data that is not a
	// chunk, keys that differ from the known ones only by case or repeat,
	// several choices, a choice other than 0.
	bad error
	// info is what the API's stream keeps of the event while it is held
	// (heldEvent.info).
	info any
	// raw, when set, is what the client gets instead of the event as it
	// came (a copy of the text rewritten to what was judged).
	raw []byte
	// feed, when set, feeds the event's text (in the order the client
	// reads it) instead of feedFields.
	feed func(*feeder, *eventText) error
}

// eventJSON reads an event's data strictly as a JSON object of shape sh,
// and its keys. ok is false when there is none to read, and p says why:
// an event without data (a comment) is nothing, [DONE] is done, anything
// else bad.
func eventJSON(ev sseEvent, sh *shape) (d []byte, keys map[string]bool, p parsedEvent, ok bool) {
	if ev.bad != nil {
		return nil, nil, parsedEvent{bad: ev.bad}, false
	}
	if ev.data == nil {
		return nil, nil, parsedEvent{}, false
	}
	// JSON's whitespace only: another byte (such as \v) before the value
	// makes it unreadable to the client's JSON parser.
	d = bytes.Trim(ev.data, " \t\r\n")
	if string(d) == "[DONE]" {
		return nil, nil, parsedEvent{done: true}, false
	}
	if len(d) == 0 || d[0] != '{' {
		return nil, nil, parsedEvent{bad: errors.New("event data is not a JSON object")}, false
	}
	keys, err := strictKeys(d, sh)
	if err != nil {
		return nil, nil, parsedEvent{bad: fmt.Errorf("event data: %v", err)}, false
	}
	return d, keys, parsedEvent{}, true
}

// parseEvent reads one upstream event strictly: an event without data (a
// comment) is nothing; data is [DONE] or a chat-completion chunk.
func parseEvent(ev sseEvent) parsedEvent {
	d, _, p, ok := eventJSON(ev, chunkShape)
	if !ok {
		return p
	}
	var c wireChunk
	if err := json.Unmarshal(d, &c); err != nil {
		return parsedEvent{bad: fmt.Errorf("event data is not a chunk: %v", err)}
	}
	p = parsedEvent{isChunk: true, meta: c.chunkMeta}
	if u := bytes.TrimSpace(c.Usage); len(u) > 0 && u[0] == '{' {
		p.usage = u
	}
	switch {
	case len(c.Choices) > 1:
		p.bad = fmt.Errorf("a chunk with %d choices (streamguard asks for one)", len(c.Choices))
	case len(c.Choices) == 1:
		ch := c.Choices[0]
		if ch.Index != 0 {
			p.bad = fmt.Errorf("a chunk for choice %d (streamguard asks for one)", ch.Index)
			break
		}
		p.bad = ch.Delta.check(false)
		if p.bad == nil {
			p.bad = checkLegacyText(ch.Text, &ch.Delta)
		}
		p.hasText, p.text = true, ch.Delta
		p.finished = ch.FinishReason != nil && *ch.FinishReason != ""
	}
	// An error the way clients see one: openai-python raises on a truthy
	// "error" (TGI sends a string, OpenRouter an object beside a choice
	// that finishes with "error"), and shows the choices of a chunk whose
	// "error" is false, "", 0 or {}. So a truthy error is passed on as
	// the upstream's when no choice carries text, refused when one does
	// (that text would otherwise reach some client unjudged), and a
	// falsy one is no error: its chunk is read like any other.
	if !truthy(c.Error) || p.bad != nil {
		return p
	}
	if p.hasText && !p.text.empty() {
		return parsedEvent{bad: errors.New(`an "error" beside text`)}
	}
	return parsedEvent{isChunk: true, meta: c.chunkMeta, usage: p.usage, apiErr: c.Error}
}

// chunkOut is a chunk the proxy writes: a partial delta at a cut, the
// content_filter finish, or a refusal.
type chunkOut struct {
	chunkMeta
	Choices     []choiceOut `json:"choices"`
	Streamguard *cutInfo    `json:"streamguard,omitempty"`
}

type choiceOut struct {
	Index        int            `json:"index"`
	Delta        map[string]any `json:"delta"`
	FinishReason *string        `json:"finish_reason"`
}

// cutInfo tells the client why the stream ended (an extension field that
// OpenAI clients ignore).
type cutInfo struct {
	Reason   string `json:"reason"`
	Token    int    `json:"token"`
	Level    string `json:"level,omitempty"`
	Category string `json:"category,omitempty"`
	Request  string `json:"request_id,omitempty"`
}

func (c chunkOut) event() []byte {
	if c.Object == "" {
		c.Object = "chat.completion.chunk"
	}
	return dataEvent(c)
}

// dataEvent is v as one SSE data event.
func dataEvent(v any) []byte {
	return append(append([]byte("data: "), mustJSON(v)...), "\n\n"...)
}

var doneEvent = []byte("data: [DONE]\n\n")

const (
	finishContentFilter = "content_filter"
	finishLength        = "length"
)

func finishChunk(meta chunkMeta, index int, reason string, info *cutInfo) []byte {
	r := reason
	return chunkOut{chunkMeta: meta, Choices: []choiceOut{{Index: index, Delta: map[string]any{}, FinishReason: &r}}, Streamguard: info}.event()
}

func deltaChunk(meta chunkMeta, index int, delta map[string]any) []byte {
	return chunkOut{chunkMeta: meta, Choices: []choiceOut{{Index: index, Delta: delta}}}.event()
}

// syntheticMeta is the metadata of a completion the proxy answers itself.
func syntheticMeta(id, model string) chunkMeta {
	return chunkMeta{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: model}
}

// usageChunk is the last chunk OpenAI sends a client that asked
// stream_options.include_usage: no choices, and the usage. The proxy writes
// it itself when it ends a stream (a cut, a refusal, a response too long
// for the guard): usage is the upstream's last usage object when one was
// seen, else the guard's count (usageFrom).
func usageChunk(meta chunkMeta, usage json.RawMessage, from string) []byte {
	if meta.Object == "" {
		meta.Object = "chat.completion.chunk"
	}
	return dataEvent(struct {
		chunkMeta
		Choices     []choiceOut     `json:"choices"`
		Usage       json.RawMessage `json:"usage"`
		Streamguard map[string]any  `json:"streamguard"`
	}{meta, []choiceOut{}, usage, map[string]any{"usage": from}})
}

// guardUsage is the usage the proxy reports when the upstream sent none:
// the response tokens the guard judged (its own tokenizer's count) as
// completion tokens, and no prompt tokens (the upstream's count of the
// prompt is not known).
func guardUsage(completion int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"prompt_tokens":0,"completion_tokens":%d,"total_tokens":%d}`, completion, completion))
}

// truthy is Python's truth of a JSON value: false for null, false, 0, "",
// [] and {}, true otherwise (what openai-python tests "error" with).
func truthy(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return false
	case raw[0] == '"':
		return len(raw) > 2
	case raw[0] == '[' || raw[0] == '{':
		return len(bytes.TrimSpace(raw[1:len(raw)-1])) > 0
	}
	switch string(raw) {
	case "null", "false":
		return false
	}
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		return f != 0
	}
	return true
}
