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

// Skipped is the ordered set of what a request's text left out: content
// part types ("image_url", "input_audio", "file", ...) and message roles
// ("tool", "function") the guard does not judge. /v1/moderations reports
// it as qwen3guard.skipped, the LiteLLM guardrail and the proxy in the
// X-Streamguard-Skipped header.
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
// "text" field, and "refusal" parts' "refusal". Servers such as vLLM feed
// all of these to the model as text; a part the guard passed over would be
// text that reaches the model unjudged.
type Part struct {
	Type    string
	Text    *string
	Refusal *string
}

// UnmarshalJSON reads the part's keys exactly as written ("type", "text",
// "refusal"), as the Python servers that feed the model read them:
// encoding/json would also take "Text", and a later {"Text": null} would
// then hide the "text" they read.
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
	p.Refusal, err = f.str("refusal")
	return err
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
	raw, ok := f[k]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
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
	switch {
	case p.Text != nil && p.Refusal != nil:
		return joinNonEmpty(*p.Text, *p.Refusal), true
	case p.Text != nil:
		return *p.Text, true
	case p.Refusal != nil:
		return *p.Refusal, true
	}
	return "", false
}

// ContentText reads a message's content: a string, null, or an array of
// parts (Part, or a bare string as some servers accept), whose texts are
// joined with newlines; the types of parts without text are noted in
// skipped.
func ContentText(raw json.RawMessage, skipped *Skipped) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content: want a string or an array of parts: %w", err)
	}
	var texts []string
	for i, raw := range parts {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			texts = append(texts, s)
			continue
		}
		var p Part
		if err := json.Unmarshal(raw, &p); err != nil {
			return "", fmt.Errorf("content[%d]: want a string or a content part: %w", i, err)
		}
		if t, ok := p.Judged(); ok {
			texts = append(texts, t)
		} else {
			skipped.Add(p.Type)
		}
	}
	return strings.Join(texts, "\n"), nil
}

// Message reads one OpenAI message into a turn: role developer is read as
// system; ok is false for a message that is skipped (tool and function
// results, noted in skipped).
//
// Keys are read exactly as written ("role", "content",
// "reasoning_content"), as the servers that feed the model read them: a
// "Content" after "content" would otherwise replace the text they read.
func Message(raw json.RawMessage, skipped *Skipped) (msg tokenizer.Message, ok bool, err error) {
	f, err := exactFields(raw)
	if err != nil {
		return tokenizer.Message{}, false, err
	}
	role, err := f.text("role")
	if err != nil {
		return tokenizer.Message{}, false, err
	}
	reasoning, err := f.text("reasoning_content")
	if err != nil {
		return tokenizer.Message{}, false, err
	}
	switch role {
	case "developer":
		role = "system"
	case "system", "user", "assistant":
	case "tool", "function":
		// A tool result is the tool's output, not a turn of the
		// conversation the guard's template renders.
		skipped.Add(role)
		return tokenizer.Message{}, false, nil
	default:
		return tokenizer.Message{}, false, fmt.Errorf("role %q: want system, developer, user, assistant or tool", role)
	}
	text, err := ContentText(f["content"], skipped)
	if err != nil {
		return tokenizer.Message{}, false, err
	}
	return tokenizer.Message{Role: role, Content: text, ReasoningContent: reasoning}, true, nil
}

// Conversation reads messages in order: tool and function results are
// skipped, and the assistant turns they separated (the tool call, then the
// answer) are joined into one turn.
func Conversation(raws []json.RawMessage, skipped *Skipped) ([]tokenizer.Message, error) {
	msgs := make([]tokenizer.Message, 0, len(raws))
	afterTool := false
	for i, raw := range raws {
		m, ok, err := Message(raw, skipped)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		if ok {
			if n := len(msgs); afterTool && n > 0 && m.Role == "assistant" && msgs[n-1].Role == "assistant" {
				prev := &msgs[n-1]
				prev.Content = joinNonEmpty(prev.Content, m.Content)
				prev.ReasoningContent = joinNonEmpty(prev.ReasoningContent, m.ReasoningContent)
			} else {
				msgs = append(msgs, m)
			}
		}
		afterTool = !ok
	}
	return msgs, nil
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
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
// beside a tool call, a late system message. The model reads it, so it
// must be judged too.
func Trailing(turns []tokenizer.Message) string {
	var t string
	for _, m := range turns {
		t = joinNonEmpty(t, joinNonEmpty(m.ReasoningContent, m.Content))
	}
	if strings.TrimSpace(t) == "" {
		// White space alone (models answer "\n\n" beside a tool call)
		// says nothing, and a turn of it is no prompt to judge.
		return ""
	}
	return t
}
