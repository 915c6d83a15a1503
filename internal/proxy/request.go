package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/guard"
)

// chatRequest is what the proxy reads from a chat-completions request; the
// body itself is forwarded unchanged.
type chatRequest struct {
	Model  string
	Stream bool
	// Messages are the turns the guard judges: the conversation up to and
	// including the last user turn, in the roles the chat template knows.
	Messages []guard.Message
	// IncludeUsage is stream_options.include_usage: the client wants a
	// usage chunk before [DONE].
	IncludeUsage bool
	// Skipped are the message roles (tool, function) and content part
	// types (image_url, input_audio, ...) the guard did not judge, in the
	// order first seen (the X-Streamguard-Skipped header).
	Skipped []string
}

type wireMessage struct {
	Role             string          `json:"role"`
	Content          json.RawMessage `json:"content"`
	ReasoningContent string          `json:"reasoning_content"`
}

// parseRequest reads the fields the guard needs and refuses what the proxy
// cannot moderate (several choices, no user text).
func parseRequest(body []byte) (*chatRequest, error) {
	var w struct {
		Model    string        `json:"model"`
		Stream   bool          `json:"stream"`
		N        *int          `json:"n"`
		Messages []wireMessage `json:"messages"`
		Options  *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := strictJSON(body, requestShape); err != nil {
		return nil, fmt.Errorf("request body is not a chat-completions JSON object: %v", err)
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("request body is not a chat-completions JSON object: %v", err)
	}
	if w.N != nil && *w.N != 1 {
		return nil, fmt.Errorf("n=%d: streamguard moderates one choice per request; ask for n=1", *w.N)
	}
	if len(w.Messages) == 0 {
		return nil, errors.New("messages: at least one message is required")
	}
	var msgs []guard.Message
	var skipped []string
	skip := func(what string) {
		if what == "" {
			what = "unknown"
		}
		for _, s := range skipped {
			if s == what {
				return
			}
		}
		skipped = append(skipped, what)
	}
	lastUser := -1
	for i, m := range w.Messages {
		if m.Role == "tool" || m.Role == "function" {
			// Tool results render as user turns in the Qwen3 template, which
			// the guard's renderer does not support; they add no user query.
			// Skipped and noted, as /v1/moderations and LiteLLM do.
			skip(m.Role)
			continue
		}
		text, err := contentText(m.Content, skip)
		if err != nil {
			return nil, fmt.Errorf("messages[%d].content: %v", i, err)
		}
		var role string
		switch m.Role {
		case "system", "developer":
			role = "system"
		case "user":
			role = "user"
		case "assistant":
			role = "assistant"
		default:
			return nil, fmt.Errorf("messages[%d].role %q: want system, developer, user, assistant or tool", i, m.Role)
		}
		msgs = append(msgs, guard.Message{Role: role, Content: text, ReasoningContent: m.ReasoningContent})
		if role == "user" {
			lastUser = len(msgs) - 1
		}
	}
	if lastUser < 0 {
		return nil, errors.New("messages: no user message to judge")
	}
	if strings.TrimSpace(msgs[lastUser].Content) == "" {
		return nil, errors.New("messages: the last user message has no text to judge")
	}
	return &chatRequest{Model: w.Model, Stream: w.Stream, Messages: msgs[:lastUser+1],
		IncludeUsage: w.Stream && w.Options != nil && w.Options.IncludeUsage, Skipped: skipped}, nil
}

// contentText flattens a message content: a string, null, or an array of
// parts whose text parts are joined with newlines (other parts, such as
// images and audio, cannot be judged: their types are passed to skip).
func contentText(raw json.RawMessage, skip func(partType string)) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("want a string or an array of content parts")
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		} else {
			skip(p.Type)
		}
	}
	return strings.Join(texts, "\n"), nil
}
