// Package chatmsg reads OpenAI chat messages into the turns the guard
// judges: which roles are turns, which content parts carry text, and what
// is skipped because the guard judges text only. /v1/moderations, the
// LiteLLM guardrail and the proxy all read messages through it, so a text
// one of them judges is never passed over by another.
package chatmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Skipped is the ordered set of what a request's text left out: the
// content part types the guard cannot judge ("image_url", "input_audio",
// "file", ...). /v1/moderations reports it as qwen3guard.skipped, the
// LiteLLM guardrail and the proxy in the X-Streamguard-Skipped header.
type Skipped []string

// Add notes what, once.
func (s *Skipped) Add(what string) {
	if what == "" {
		what = "unknown"
	}
	if !slices.Contains(*s, what) {
		*s = append(*s, what)
	}
}

// Part is a content part as the guard reads it. Every part that carries
// text is judged, whatever its type: "text" (Chat Completions),
// "input_text" and "output_text" (the Responses API) and any other with a
// "text" field, "refusal" parts' "refusal", "thinking" parts' "thinking";
// and a part of a type the guard does not know has every string in it
// judged (Other). Servers such as vLLM feed parts of many types to the
// model as text ("thinking", "tool_reference", ...); a part the guard
// passed over would be text that reaches the model unjudged. Only the
// media types (mediaParts) carry nothing to judge but their "text".
type Part struct {
	Type     string
	Text     *string
	Refusal  *string
	Thinking *string
	// Other are the strings of a part of a type the guard does not know,
	// in the order written, less the value of its own "type".
	Other []string
}

// mediaParts are the content part types whose payload the guard cannot
// judge: an image, sound, video or file, their embeddings (vLLM's
// image_embeds, audio_embeds: base64 tensors), and reasoning the vendor
// encrypted (redacted_thinking). Skipped and noted.
var mediaParts = map[string]bool{
	"image_url": true, "input_image": true, "image": true, "image_embeds": true,
	"input_audio": true, "audio_url": true, "audio": true, "audio_embeds": true,
	"video_url": true, "video": true,
	"file": true, "input_file": true,
	"redacted_thinking": true,
}

// textParts are the types whose text fields the guard reads by name; any
// other field of theirs (cache_control, annotations) is not text the
// model reads.
var textParts = map[string]bool{"text": true, "input_text": true, "output_text": true, "refusal": true, "thinking": true}

// UnmarshalJSON reads the part's keys exactly as written ("type", "text",
// "refusal", "thinking"), as the Python servers that feed the model read
// them: encoding/json would also take "Text", and a later {"Text": null}
// would then hide the "text" they read.
func (p *Part) UnmarshalJSON(b []byte) error {
	f, err := exactFields(b)
	if err != nil {
		return err
	}
	*p = Part{}
	if p.Type, err = f.text("type"); err != nil {
		return err
	}
	if p.Text, err = f.str("text"); err != nil {
		return err
	}
	if p.Refusal, err = f.str("refusal"); err != nil {
		return err
	}
	if p.Thinking, err = f.str("thinking"); err != nil {
		return err
	}
	if !mediaParts[p.Type] && !textParts[p.Type] {
		p.Other, err = stringsOf(b, "text", "refusal", "thinking")
	}
	return err
}

// stringsOf returns the strings in the JSON value b, in the order written:
// array elements and object members, at any depth, less the values of the
// top-level "type" key (which names the part's or call's shape) and of the
// top-level keys skip (read by name elsewhere). A "type" deeper down is a
// value like any other: a tool's arguments may be {"type": "…"}.
func stringsOf(b []byte, skip ...string) ([]string, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	var out []string
	var walk func(depth int, key string) error
	walk = func(depth int, key string) error {
		if depth > maxDepth {
			return errors.New("JSON nested too deeply")
		}
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case string:
			if depth != 1 || key != "type" && !slices.Contains(skip, key) {
				out = append(out, v)
			}
		case json.Delim:
			for d.More() {
				k := ""
				if v == '{' {
					t, err := d.Token()
					if err != nil {
						return err
					}
					k, _ = t.(string)
				}
				if err := walk(depth+1, k); err != nil {
					return err
				}
			}
			if _, err := d.Token(); err != nil { // the closing delimiter
				return err
			}
		}
		return nil
	}
	return out, walk(0, "")
}

// maxDepth bounds the nesting stringsOf follows (encoding/json's own
// bound is 10,000).
const maxDepth = 512

// Absent reports a JSON member that is not there or null: an empty raw
// value (a missing key) or null.
func Absent(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// fields is a JSON object's members by their exact keys (a repeated key:
// the last, as Python's json and encoding/json both take).
type fields map[string]json.RawMessage

func exactFields(b []byte) (fields, error) {
	var f fields
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f == nil {
		return nil, errors.New("want an object, not null")
	}
	return f, nil
}

// text is member k as a string: "" when absent or null.
func (f fields) text(k string) (string, error) {
	v, err := f.str(k)
	if v == nil {
		return "", err
	}
	return *v, err
}

// str is member k as a string: nil when absent or null.
func (f fields) str(k string) (*string, error) {
	raw := f[k]
	if Absent(raw) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%q: %w", k, err)
	}
	return &s, nil
}

// Judged returns the part's text, and false for a part with none (an
// image, audio, a file).
func (p Part) Judged() (string, bool) {
	var texts []string
	for _, t := range []*string{p.Text, p.Refusal, p.Thinking} {
		if t != nil {
			texts = append(texts, *t)
		}
	}
	texts = append(texts, p.Other...)
	if len(texts) == 0 {
		return "", false
	}
	return Join(texts...), true
}

// ContentText reads a message's content: a string, null, or an array of
// parts (Part, or a bare string as some servers accept), whose texts are
// joined with newlines; the types of parts without text are noted in
// skipped.
func ContentText(raw json.RawMessage, skipped *Skipped) (string, error) {
	text, _, err := contentTexts(raw, skipped)
	return text, err
}

// contentTexts is ContentText's text and, beside it, plain: the content as
// a server that reads a part's "text" alone (vLLM) joins it.
func contentTexts(raw json.RawMessage, skipped *Skipped) (text, plain string, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, s, err
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", "", fmt.Errorf("content: want a string or an array of parts: %w", err)
	}
	var texts, plains []string
	for i, raw := range parts {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			texts, plains = append(texts, s), append(plains, s)
			continue
		}
		var p Part
		if err := json.Unmarshal(raw, &p); err != nil {
			return "", "", fmt.Errorf("content[%d]: want a string or a content part: %w", i, err)
		}
		if t, ok := p.Judged(); ok {
			texts = append(texts, t)
		} else {
			skipped.Add(p.Type)
		}
		if p.Text != nil {
			plains = append(plains, *p.Text)
		}
	}
	return strings.Join(texts, "\n"), strings.Join(plains, "\n"), nil
}

// ToolRole is the role of a tool or function result among the turns
// Conversation returns. The chat template renders a tool result inside a
// user turn (<tool_response>…</tool_response>), so the model reads it;
// it is never the user turn whose verdict a request stands on (LastUser
// passes over it), and the tokenizer lays it out as the template does.
const ToolRole = "tool"

// Message reads one OpenAI message into a turn: role developer is read as
// system, tool and function results as ToolRole. An assistant's tool calls
// (tool_calls, the legacy function_call) are its ToolCalls (see ToolCalls;
// a call of another shape has its strings in the content); its reasoning is "reasoning_content"
// and "reasoning" (vLLM and OpenRouter read the latter), both when they
// differ.
//
// Keys are read exactly as written ("role", "content", ...), as the
// servers that feed the model read them: a "Content" after "content"
// would otherwise replace the text they read.
func Message(raw json.RawMessage, skipped *Skipped) (tokenizer.Message, error) {
	f, err := exactFields(raw)
	if err != nil {
		return tokenizer.Message{}, err
	}
	role, err := f.text("role")
	if err != nil {
		return tokenizer.Message{}, err
	}
	reasoning, err := f.text("reasoning_content")
	if err != nil {
		return tokenizer.Message{}, err
	}
	other, err := f.text("reasoning")
	if err != nil {
		return tokenizer.Message{}, err
	}
	if other != reasoning {
		reasoning = Join(reasoning, other)
	}
	details, err := reasoningDetails(f)
	if err != nil {
		return tokenizer.Message{}, err
	}
	if details != "" && details != reasoning {
		reasoning = Join(reasoning, details)
	}
	switch role {
	case "developer":
		role = "system"
	case "system", "user", "assistant":
	case "tool", "function":
		role = ToolRole
	default:
		return tokenizer.Message{}, fmt.Errorf("role %q: want system, developer, user, assistant, tool or function", role)
	}
	text, plain, err := contentTexts(f["content"], skipped)
	if err != nil {
		return tokenizer.Message{}, err
	}
	calls, other, err := ToolCalls(f["tool_calls"], f["function_call"])
	if err != nil {
		return tokenizer.Message{}, err
	}
	text = Join(text, other)
	if role == "user" && tokenizer.IsToolResponse(text) != tokenizer.IsToolResponse(plain) {
		// Whether a user turn is a tool result decides which reasoning
		// the template keeps before it, and the model's server reads a
		// text part's "text" alone (vLLM): both readings must agree, or
		// the guard's layout would keep other reasoning than the model's.
		return tokenizer.Message{}, errors.New("content: its parts' text alone is a tool result (<tool_response>…</tool_response>) and with their other members is not, or the reverse; send a tool result's text alone")
	}
	return tokenizer.Message{Role: role, Content: text, ReasoningContent: reasoning, ToolCalls: calls}, nil
}

// reasoningDetails is the readable text of OpenRouter's reasoning_details
// (each block's "text" and "summary"), which clients send back with the
// assistant's message; encrypted blocks ("data") have none to judge.
func reasoningDetails(f fields) (string, error) {
	raw := f["reasoning_details"]
	if Absent(raw) {
		return "", nil
	}
	var blocks []json.RawMessage
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "", fmt.Errorf(`"reasoning_details": want an array: %w`, err)
	}
	var texts []string
	for i, b := range blocks {
		bf, err := exactFields(b)
		if err != nil {
			return "", fmt.Errorf("reasoning_details[%d]: %w", i, err)
		}
		for _, k := range []string{"text", "summary"} {
			s, err := bf.str(k)
			if err != nil {
				return "", fmt.Errorf("reasoning_details[%d]: %w", i, err)
			}
			if s != nil {
				texts = append(texts, *s)
			}
		}
	}
	return Join(texts...), nil
}

// ToolCalls reads tool calls, which the Qwen3 template writes into the
// assistant's turn after its content ("<tool_call>\n{"name": N,
// "arguments": A}\n</tool_call>", one per call, the tags its added
// tokens): the model reads the names and arguments it called, so the guard
// does too. toolCalls is an array of calls (a message's tool_calls),
// functionCall one call (the legacy function_call); either may be absent.
// A call of another shape has every string in it returned in other
// instead (joined by newlines, escapes decoded as well), to be judged as
// text.
//
// Arguments given as a JSON string are read with their \uXXXX escapes
// decoded (Unescape): the letters are what the model reads (vLLM and
// Ollama parse a request's arguments before the template writes them
// again, unescaped) and what an agent acting on an answer's call gets from
// its JSON parser, so escapes never hide a word from the guard.
func ToolCalls(toolCalls, functionCall json.RawMessage) (calls []tokenizer.ToolCall, other string, err error) {
	var raws []json.RawMessage
	if !Absent(toolCalls) {
		if err := json.Unmarshal(toolCalls, &raws); err != nil {
			return nil, "", fmt.Errorf(`"tool_calls": want an array of calls: %w`, err)
		}
	}
	if !Absent(functionCall) {
		raws = append(raws, functionCall)
	}
	var others []string
	for i, raw := range raws {
		c, err := exactFields(raw)
		if err != nil {
			return nil, "", fmt.Errorf("tool call %d: %w", i, err)
		}
		if fn, ok := c["function"]; ok {
			if c, err = exactFields(fn); err != nil {
				return nil, "", fmt.Errorf("tool call %d: function: %w", i, err)
			}
		}
		name, nerr := c.str("name")
		args, aerr := c.str("arguments")
		if raw, ok := c["arguments"]; ok && aerr != nil {
			// Arguments as a JSON object rather than a string: written as
			// the template writes them (tojson).
			if a, err := ToJSON(raw); err == nil {
				args, aerr = &a, nil
			}
		}
		if nerr != nil || aerr != nil || name == nil {
			strs, err := stringsOf(raw, "id")
			if err != nil {
				return nil, "", fmt.Errorf("tool call %d: %w", i, err)
			}
			// Decoded too: a server may run a call of no name too, its
			// arguments parsed (Ollama's model read the letters).
			for k := range strs {
				strs[k] = Unescape(strs[k])
			}
			others = append(others, strings.Join(strs, "\n"))
			continue
		}
		a := ""
		if args != nil {
			a = Unescape(*args)
		}
		calls = append(calls, tokenizer.ToolCall{Name: *name, Arguments: a})
	}
	return calls, Join(others...), nil
}

// ToolCallsText is what ToolCalls reads as one text, for judging in a turn
// of text (the template's layout of the calls, their tags spelled out).
func ToolCallsText(toolCalls, functionCall json.RawMessage) (string, error) {
	calls, other, err := ToolCalls(toolCalls, functionCall)
	if err != nil {
		return "", err
	}
	return Join(tokenizer.ToolCallsText(calls, false), other), nil
}

// WithCalls is m's content followed by its tool calls as the template
// writes them, as text.
func WithCalls(m tokenizer.Message) string {
	return m.Content + tokenizer.ToolCallsText(m.ToolCalls, m.Content != "")
}

// Conversation reads messages in order (Message).
func Conversation(raws []json.RawMessage, skipped *Skipped) ([]tokenizer.Message, error) {
	msgs := make([]tokenizer.Message, 0, len(raws))
	for i, raw := range raws {
		m, err := Message(raw, skipped)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// Definitions lists what a request declares beside its messages and the
// model reads — tool definitions (tools, the legacy functions: arrays of
// objects, one item each), a response_format's JSON schema, vLLM's
// documents — each as the template's tojson writes it (ToJSON), names and
// descriptions included.
// They are judged as text, alone, as many at a time as fit the guard
// (all in one user turn, a list that does not fit halved until it does).
func Definitions(tools []json.RawMessage, others ...json.RawMessage) ([]string, error) {
	var out []string
	add := func(raw json.RawMessage) error {
		t, err := ToJSON(raw)
		if err != nil {
			return err
		}
		out = append(out, t)
		return nil
	}
	for _, raw := range tools {
		if isEmpty(raw) {
			continue
		}
		var defs []json.RawMessage
		if err := json.Unmarshal(raw, &defs); err != nil {
			return nil, fmt.Errorf("tool definitions: want an array: %w", err)
		}
		for _, t := range defs {
			if err := add(t); err != nil {
				return nil, err
			}
		}
	}
	for _, raw := range others {
		if !isEmpty(raw) {
			if err := add(raw); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// isEmpty reports a declared value with nothing in it: absent, null, []
// or {}.
func isEmpty(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return Absent(raw) || string(raw) == "[]" || string(raw) == "{}"
}

// KeptReasoning is the reasoning of the assistant turns before turns[last],
// the last user turn, that the Qwen3 template keeps: those after the
// template's last query, which is the last user turn not written as a tool
// result ("<tool_response>…</tool_response>"). The tokenizer's layout
// keeps it too, so the prompt's verdict reads it. Reasoning before that
// query no template of the model renders; it is context the guard does not
// read, as every earlier turn is only context for the last one.
func KeptReasoning(turns []tokenizer.Message, last int) string {
	if last <= 0 || last >= len(turns) { // no turn before the last user turn
		return ""
	}
	query := last
	for ; query >= 0; query-- {
		m := turns[query]
		if m.Role == "user" && !tokenizer.IsToolResponse(m.Content) {
			break
		}
	}
	if query < 0 {
		// No query: the template's last query is then the last message,
		// and no reasoning before it is written.
		return ""
	}
	var texts []string
	for _, m := range turns[min(query+1, last):last] {
		if m.Role == "assistant" {
			texts = append(texts, m.ReasoningContent)
		}
	}
	t := Join(texts...)
	if strings.TrimSpace(t) == "" {
		return ""
	}
	return t
}

// Beyond is what the model reads beyond the rendering of the turns up to
// turns[last], the last user turn: the turns after it (Trailing; "" when
// there is none, rather than white space). The proxy and the LiteLLM API
// judge it as one more user turn.
func Beyond(turns []tokenizer.Message, last int) string {
	return Trailing(turns[last+1:])
}

// Join joins texts with newlines, leaving out the empty ones: the one way
// turns and parts are joined for judging.
func Join(texts ...string) string {
	n, count, only := 0, 0, ""
	for _, t := range texts {
		if t != "" {
			n, count, only = n+len(t), count+1, t
		}
	}
	if count <= 1 {
		return only // no copy
	}
	var out strings.Builder
	out.Grow(n + count - 1)
	for _, t := range texts {
		if t == "" {
			continue
		}
		if out.Len() > 0 {
			out.WriteByte('\n')
		}
		out.WriteString(t)
	}
	return out.String()
}

// LastUser is the index of the last user turn with text, or -1.
func LastUser(msgs []tokenizer.Message) int {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" && strings.TrimSpace(msgs[i].Content) != "" {
			return i
		}
	}
	return -1
}

// Trailing joins the text of turns (their reasoning and content), the
// turns a request puts after its last user turn: an assistant's words
// and tool calls, tool results, a late system message. The model reads
// it, so it must be judged too.
func Trailing(turns []tokenizer.Message) string {
	texts := make([]string, 0, 2*len(turns))
	for _, m := range turns {
		texts = append(texts, m.ReasoningContent, WithCalls(m))
	}
	t := Join(texts...)
	if strings.TrimSpace(t) == "" {
		// White space alone (models answer "\n\n" beside a tool call)
		// says nothing, and a turn of it is no prompt to judge.
		return ""
	}
	return t
}
