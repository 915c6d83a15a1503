package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/streamguard/streamguard/internal/chatmsg"
)

// A Responses API request is read into the chat messages the model's
// template would render (responsesInput) and then judged exactly as a
// chat-completions request is: the last user turn in its context, what
// the model reads after it, and the declared tools and schema alone.
//
// What the request points at rather than carries — a stored
// conversation, a stored prompt, an item_reference — is text the model
// reads and the guard cannot see, so such a request is refused with what
// to send instead; an earlier response (previous_response_id) only where
// the proxy relayed it and remembers the conversation it ended
// (conversations, continued). So are requests
// for what the proxy cannot judge in the answer: log probabilities
// (top_logprobs, include), built-in tools (their calls and results are
// output items that are not the model's text), and background responses
// (fetched later, past the proxy); and vLLM's members that add turns the
// guard would not read or spell the answer beside its output.

// responsesRequestShape is what parseResponsesRequest decodes.
var responsesRequestShape = object(map[string]*shape{
	"model": nil, "stream": nil, "instructions": nil, "tools": arrayOf(object(map[string]*shape{"type": nil})),
	"text":    object(map[string]*shape{"format": object(map[string]*shape{"type": nil})}),
	"include": nil, "top_logprobs": nil, "background": nil, "previous_response_id": nil, "conversation": nil, "prompt": nil,
	"input": {elem: object(map[string]*shape{
		"type": nil, "role": nil, "call_id": nil, "name": nil, "arguments": nil, "input": nil, "output": nil, "summary": {elem: object(map[string]*shape{"text": nil})},
		"encrypted_content": nil,
		"content":           {elem: object(map[string]*shape{"type": nil, "text": nil, "refusal": nil})},
	})},
	"previous_input_messages": nil, "enable_response_messages": nil, "chat_template": nil, "chat_template_kwargs": nil,
	"previous_response": nil, "request_id": nil, "store": nil,
})

// responsesTools are the tool types a request may declare: the
// application's own functions and custom (free-form) tools, whose
// definitions are judged and whose calls are the model's text.
var responsesTools = map[string]bool{"function": true, "custom": true}

// responsesIncludes are the include values a request may ask for: the
// encrypted reasoning a client sends back (no text it can read), and the
// input images' URLs (the client's own).
var responsesIncludes = map[string]bool{"reasoning.encrypted_content": true, "message.input_image.image_url": true}

func parseResponsesRequest(body []byte) (*chatRequest, error) {
	var w struct {
		Model        string            `json:"model"`
		Stream       bool              `json:"stream"`
		Input        json.RawMessage   `json:"input"`
		Instructions json.RawMessage   `json:"instructions"`
		Tools        []json.RawMessage `json:"tools"`
		Text         *struct {
			Format json.RawMessage `json:"format"`
		} `json:"text"`
		Include      []string        `json:"include"`
		TopLogprobs  json.RawMessage `json:"top_logprobs"`
		Background   json.RawMessage `json:"background"`
		Previous     *string         `json:"previous_response_id"`
		Conversation json.RawMessage `json:"conversation"`
		Prompt       json.RawMessage `json:"prompt"`
		// vLLM's: earlier turns read into the conversation, the
		// conversation and answer spelt out in the response, and the
		// chat template and its arguments.
		PreviousInput    json.RawMessage `json:"previous_input_messages"`
		PreviousResponse json.RawMessage `json:"previous_response"`
		RequestID        json.RawMessage `json:"request_id"`
		Store            *bool           `json:"store"`
		ResponseMessages json.RawMessage `json:"enable_response_messages"`
		Template         json.RawMessage `json:"chat_template"`
		Kwargs           json.RawMessage `json:"chat_template_kwargs"`
	}
	if err := strictJSON(body, responsesRequestShape); err != nil {
		return nil, fmt.Errorf("request body is not a Responses API JSON object: %v", err)
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("request body is not a Responses API JSON object: %v", err)
	}
	switch {
	case !chatmsg.Absent(w.Conversation):
		return nil, errors.New("conversation: streamguard judges the conversation a request carries, and a stored conversation is out of its sight; send its items in input instead")
	case !chatmsg.Absent(w.Prompt):
		return nil, errors.New("prompt: a stored prompt is text the model reads and streamguard cannot see; send it in instructions and input instead")
	case truthy(w.Background):
		return nil, errors.New("background: a background response is fetched later, past the guard; leave background out")
	case truthy(w.TopLogprobs):
		return nil, errors.New("top_logprobs: streamguard does not relay log probabilities (their tokens and alternatives are text it does not judge); leave top_logprobs out")
	case !chatmsg.Absent(w.PreviousInput), !chatmsg.Absent(w.PreviousResponse):
		return nil, errors.New("previous_input_messages, previous_response: streamguard judges the conversation in input; send the earlier turns there")
	case !chatmsg.Absent(w.RequestID):
		return nil, errors.New("request_id: the upstream would name its answer as the client chose, and another answer under the same name would be the one continued; leave request_id out")
	case truthy(w.ResponseMessages):
		return nil, errors.New("enable_response_messages: the answer spelt out beside its output is text streamguard does not judge; leave it out")
	case !chatmsg.Absent(w.Template):
		return nil, errors.New("chat_template: streamguard judges the conversation as the model's own template lays it out; leave chat_template out")
	}
	if err := checkTemplateKwargs(w.Kwargs); err != nil {
		return nil, err
	}
	for _, inc := range w.Include {
		if !responsesIncludes[inc] {
			return nil, fmt.Errorf("include: %q adds to the answer what streamguard does not judge; it passes only reasoning.encrypted_content and message.input_image.image_url", inc)
		}
	}
	for i, t := range w.Tools {
		var def struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(t, &def); err != nil {
			return nil, fmt.Errorf("tools[%d]: want an object: %v", i, err)
		}
		if !responsesTools[def.Type] {
			hint := ""
			if def.Type == "web_search" || def.Type == "web_search_preview" {
				hint = ` (Codex adds web_search by default: run it with -c web_search="disabled")`
			}
			return nil, fmt.Errorf("tools[%d]: type %q: streamguard judges function and custom tools only (a built-in tool's calls and results are output that is not the model's text); declare your own tools%s", i, def.Type, hint)
		}
	}
	instructions, turns, err := responsesInput(w.Instructions, w.Input)
	if err != nil {
		return nil, err
	}
	req := &chatRequest{Model: w.Model, Stream: w.Stream, Turns: turns, Instructions: instructions, NoStore: w.Store != nil && !*w.Store}
	if w.Previous != nil && *w.Previous != "" {
		// Judged once the conversation it continues is known (continued).
		req.Previous = *w.Previous
	} else if err := req.readTurns(nil); err != nil {
		return nil, err
	}
	var format json.RawMessage
	if w.Text != nil && !chatmsg.Absent(w.Text.Format) {
		var f struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(w.Text.Format, &f); err != nil {
			return nil, fmt.Errorf("text.format: want an object: %v", err)
		}
		if f.Type == "json_schema" {
			format = w.Text.Format // its name, description and schema
		}
	}
	if req.Declared, err = chatmsg.Definitions([]json.RawMessage{mustJSON(w.Tools)}, format); err != nil {
		return nil, err
	}
	return req, nil
}

// readTurns reads the conversation to judge: the instructions, the turns
// before (those of the response the request continues) and the request's.
func (r *chatRequest) readTurns(before []json.RawMessage) error {
	raws := make([]json.RawMessage, 0, 1+len(before)+len(r.Turns))
	if r.Instructions != nil {
		raws = append(raws, r.Instructions)
	}
	raws = append(append(raws, before...), r.Turns...)
	var err error
	r.Messages, r.Trailing, r.Skipped, err = readConversation(raws, "input")
	return err
}

// continued reads, for a Responses API request that continues an earlier
// response (previous_response_id), the conversation that response ended,
// as the proxy remembered it (conversations), and judges the request in
// it. A response the proxy did not relay judged whole is refused: the
// upstream would have its model read a conversation the guard cannot see.
func (x *exchange) continued() error {
	if x.req.Previous == "" {
		return nil
	}
	before, ok := x.h.convs.get(x.t.Name, x.req.Previous)
	if !ok {
		return fmt.Errorf("previous_response_id: %q is no answer this streamguard relayed judged and whole for this tenant (or it was forgotten), and the conversation it ended is out of the guard's sight; send the whole conversation in input (as store: false clients do)", x.req.Previous)
	}
	x.req.Turns = append(append([]json.RawMessage(nil), before...), x.req.Turns...)
	return x.req.readTurns(nil)
}

// responsesItem is an input item as responsesInput reads it.
// responsesItemKeys are the members of each input item type that the
// guard reads. A member another type reads, on an item of a type that does
// not (a message's "output", a call's "content"), is text the guard would
// pass over and an upstream might read, so it is refused rather than
// forwarded unjudged. Members no type reads ("id", "status") are left to
// the request's shape.
var responsesItemKeys = map[string][]string{
	"message":                 {"type", "role", "content"},
	"reasoning":               {"type", "summary", "content", "encrypted_content"},
	"function_call":           {"type", "call_id", "name", "arguments"},
	"custom_tool_call":        {"type", "call_id", "name", "input"},
	"function_call_output":    {"type", "call_id", "output"},
	"custom_tool_call_output": {"type", "call_id", "output"},
}

// responsesItemMembers are the members some item type reads.
var responsesItemMembers = func() map[string]bool {
	m := map[string]bool{}
	for _, keys := range responsesItemKeys {
		for _, k := range keys {
			m[k] = true
		}
	}
	return m
}()

// checkItemKeys refuses the members of raw, an input item of type typ,
// that only other types' items have.
func checkItemKeys(raw json.RawMessage, typ string) error {
	allowed, ok := responsesItemKeys[typ]
	if !ok {
		return nil // refused by type
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if responsesItemMembers[k] && !slices.Contains(allowed, k) {
			return fmt.Errorf("a %s item has no member %q (a %s item has %s)", typ, k, typ, strings.Join(allowed, ", "))
		}
	}
	return nil
}

type responsesItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      *string         `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	Input     json.RawMessage `json:"input"`
	Output    json.RawMessage `json:"output"`
	Summary   []struct {
		Text string `json:"text"`
	} `json:"summary"`
	Encrypted *string `json:"encrypted_content"`
}

// readableReasoning is the text a model may read in a reasoning item's
// encrypted_content. Ollama keeps the model's thinking there as it is, and
// reads it back as the assistant's thinking; base64 of text a model can
// decode as well. So it is judged as it is, always: OpenAI's base64 of
// ciphertext too, as no test tells it from words a model reads (words
// joined by "_" or "-", in mixed case, are valid unpadded base64, of text
// or not), and, when it is base64 of text, decoded as well.
func readableReasoning(s string) string {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && utf8.Valid(b) {
			return chatmsg.Join(s, string(b))
		}
	}
	return s
}

// responsesInput lays instructions and input out as chat messages, as the
// model's template receives them: instructions as a system message (it
// goes first); input as a string (one user message) or items: messages as
// they are (role developer is read as system, content parts as chatmsg
// reads them); an assistant's reasoning items (their summaries and
// reasoning text), messages and function calls after one another as one
// assistant turn, its tool calls written as the template writes them;
// function and custom tool call outputs as tool results.
func responsesInput(instructions, input json.RawMessage) (system json.RawMessage, out []json.RawMessage, err error) {
	if !chatmsg.Absent(instructions) {
		var s string
		if err := json.Unmarshal(instructions, &s); err != nil {
			return nil, nil, errors.New("instructions: want a string")
		}
		system = mustJSON(map[string]any{"role": "system", "content": s})
	}
	input = bytes.TrimSpace(input)
	if len(input) == 0 || string(input) == "null" {
		return nil, nil, errors.New("input: a prompt is required")
	}
	if input[0] == '"' {
		return system, []json.RawMessage{mustJSON(map[string]any{"role": "user", "content": input})}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, nil, fmt.Errorf("input: want a string or an array of items: %v", err)
	}
	// The assistant turn being built: its reasoning, content and calls.
	var asst struct {
		open      bool
		reasoning []string
		content   []json.RawMessage
		calls     []map[string]any
	}
	closeTurn := func() {
		if !asst.open {
			return
		}
		m := map[string]any{"role": "assistant", "content": nil}
		if len(asst.reasoning) > 0 {
			m["reasoning_content"] = strings.Join(asst.reasoning, "\n")
		}
		var parts []json.RawMessage
		for _, c := range asst.content {
			if c[0] == '"' {
				c = mustJSON(map[string]any{"type": "output_text", "text": c})
			}
			parts = append(parts, c)
		}
		if len(parts) > 0 {
			m["content"] = parts
		}
		if len(asst.calls) > 0 {
			m["tool_calls"] = asst.calls
		}
		out = append(out, mustJSON(m))
		asst.open, asst.reasoning, asst.content, asst.calls = false, nil, nil, nil
	}
	for i, raw := range items {
		var it responsesItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, nil, fmt.Errorf("input[%d]: want an item object: %v", i, err)
		}
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		if err := checkItemKeys(raw, typ); err != nil {
			return nil, nil, fmt.Errorf("input[%d]: %v", i, err)
		}
		switch typ {
		case "message":
			if _, err := chatmsg.ContentText(it.Content, new(chatmsg.Skipped)); err != nil {
				return nil, nil, fmt.Errorf("input[%d]: %v", i, err)
			}
			if it.Role != "assistant" {
				closeTurn()
				out = append(out, mustJSON(map[string]any{"role": it.Role, "content": it.Content}))
				continue
			}
			asst.open = true
			c := bytes.TrimSpace(it.Content)
			switch {
			case len(c) == 0 || string(c) == "null":
			case c[0] == '[':
				var parts []json.RawMessage
				_ = json.Unmarshal(c, &parts) // read by ContentText above
				asst.content = append(asst.content, parts...)
			default:
				asst.content = append(asst.content, c)
			}
		case "reasoning":
			if len(asst.content) > 0 || len(asst.calls) > 0 {
				closeTurn()
			}
			asst.open = true
			for _, s := range it.Summary {
				asst.reasoning = append(asst.reasoning, s.Text)
			}
			text, err := chatmsg.ContentText(it.Content, new(chatmsg.Skipped))
			if err != nil {
				return nil, nil, fmt.Errorf("input[%d]: %v", i, err)
			}
			if text != "" {
				asst.reasoning = append(asst.reasoning, text)
			}
			if it.Encrypted != nil {
				if t := readableReasoning(*it.Encrypted); strings.TrimSpace(t) != "" {
					asst.reasoning = append(asst.reasoning, t)
				}
			}
		case "function_call":
			if it.Name == nil {
				return nil, nil, fmt.Errorf("input[%d]: a function_call without a name", i)
			}
			asst.open = true
			asst.calls = append(asst.calls, map[string]any{"type": "function", "id": it.CallID,
				"function": map[string]any{"name": *it.Name, "arguments": it.Arguments}})
		case "custom_tool_call":
			if it.Name == nil {
				return nil, nil, fmt.Errorf("input[%d]: a custom_tool_call without a name", i)
			}
			asst.open = true
			asst.calls = append(asst.calls, map[string]any{"type": "custom", "id": it.CallID,
				"custom": map[string]any{"name": *it.Name, "input": it.Input}})
		case "function_call_output", "custom_tool_call_output":
			closeTurn()
			out = append(out, mustJSON(map[string]any{"role": "tool", "tool_call_id": it.CallID, "content": it.Output}))
		case "item_reference":
			return nil, nil, fmt.Errorf("input[%d]: an item_reference points at a stored item that streamguard cannot see; send the item itself", i)
		default:
			return nil, nil, fmt.Errorf("input[%d]: an item of type %q, which streamguard does not judge: it reads messages, reasoning, function and custom tool calls and their outputs", i, typ)
		}
	}
	closeTurn()
	return system, out, nil
}
