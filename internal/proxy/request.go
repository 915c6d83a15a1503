package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/guardhook"
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
	// Trailing is what the upstream model reads beyond the rendering of
	// Messages: the turns after the last user turn (an assistant's words
	// and tool calls, tool results, a late system message) and the
	// earlier assistants' reasoning. It is judged too (judgeRequest).
	Trailing string
	// Declared is what the request declares beside its messages and the
	// model reads (chatmsg.Definitions): judged alone, as user turns.
	Declared []string
	// Skipped are the media content part types (image_url, input_audio,
	// ...) the guard did not judge, in the order first seen (the
	// X-Streamguard-Skipped header).
	Skipped []string

	// The Responses API's conversation (responses_request.go): Turns are
	// the request's as chat messages (the conversation it continues
	// before them, once continued), Instructions its system turn (not
	// carried into a continuation, as the API does not), Previous the
	// previous_response_id it continues.
	Turns        []json.RawMessage
	Instructions json.RawMessage
	Previous     string
	NoStore      bool // store: false (the upstream keeps no answer to continue)
}

// parseRequest reads the fields the guard needs and refuses what the proxy
// cannot moderate (several choices, no user text).
func parseRequest(body []byte) (*chatRequest, error) {
	var w struct {
		Model    string            `json:"model"`
		Stream   bool              `json:"stream"`
		N        *int              `json:"n"`
		Messages []json.RawMessage `json:"messages"`
		Options  *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Logprobs   json.RawMessage `json:"logprobs"`
		Modalities []string        `json:"modalities"`
		Tools      json.RawMessage `json:"tools"`
		Functions  json.RawMessage `json:"functions"`
		Format     *struct {
			Schema json.RawMessage `json:"json_schema"`
		} `json:"response_format"`
		Documents json.RawMessage `json:"documents"`
		// OpenRouter's plugins (a web search plugin's search_prompt is
		// given to the model as a system message) and Azure's
		// data_sources (role_information is a system message).
		Plugins     json.RawMessage `json:"plugins"`
		DataSources json.RawMessage `json:"data_sources"`
		Template    json.RawMessage `json:"chat_template"`
		Kwargs      json.RawMessage `json:"chat_template_kwargs"`
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
	// What the guard cannot judge is refused here, before the upstream is
	// called, rather than at the answer (strict.go refuses it there too):
	// log probabilities spell the answer's tokens and their top_logprobs
	// alternatives, and an audio answer is sound, with its transcript.
	if truthy(w.Logprobs) {
		return nil, errors.New("logprobs: streamguard does not relay log probabilities (their tokens and alternatives are text it does not judge); leave logprobs out")
	}
	for _, m := range w.Modalities {
		if !strings.EqualFold(m, "text") {
			return nil, fmt.Errorf(`modalities: streamguard judges text only, not an answer in %q; ask for ["text"]`, m)
		}
	}
	if len(w.Messages) == 0 {
		return nil, errors.New("messages: at least one message is required")
	}
	msgs, trailing, skipped, err := readConversation(w.Messages, "messages")
	if err != nil {
		return nil, err
	}
	// A template the request brings, or text it hands the template, would
	// lay out the prompt as the client chose: not what the guard judges.
	if !chatmsg.Absent(w.Template) {
		return nil, errors.New("chat_template: streamguard judges the conversation as the model's own template lays it out; leave chat_template out")
	}
	if err := checkTemplateKwargs(w.Kwargs); err != nil {
		return nil, err
	}
	// The verdict stands on the last user turn, in the context of the
	// turns before it (tool results laid out as the template does). What
	// the model reads beyond that rendering — the turns after it, the
	// reasoning the template keeps — is judged as one more user turn, and
	// what the request declares beside its messages (tool definitions, a
	// response format's schema, documents) on its own (judgeRequest).
	var schema json.RawMessage
	if w.Format != nil {
		schema = w.Format.Schema
	}
	defs, err := chatmsg.Definitions([]json.RawMessage{w.Tools, w.Functions}, schema, w.Documents, w.Plugins, w.DataSources)
	if err != nil {
		return nil, err
	}
	return &chatRequest{Model: w.Model, Stream: w.Stream, Messages: msgs, Trailing: trailing, Declared: defs,
		IncludeUsage: w.Stream && w.Options != nil && w.Options.IncludeUsage, Skipped: skipped}, nil
}

// readConversation reads a request's conversation as /v1/moderations
// reads one (chatmsg): every content part with text judged, images and
// the like skipped and noted, tool calls and results read as the template
// lays them out. The verdict stands on the last user turn, in the context
// of the turns before it (msgs); what the model reads beyond that
// rendering — the turns after it, the reasoning the template keeps — is
// trailing, judged as one more user turn (judgeRequest). param names the
// request's member in errors.
func readConversation(raws []json.RawMessage, param string) (msgs []guard.Message, trailing string, skipped chatmsg.Skipped, err error) {
	turns, err := chatmsg.Conversation(raws, &skipped)
	if err != nil {
		return nil, "", nil, err
	}
	lastUser := -1
	for i, m := range turns {
		if m.Role == "user" {
			lastUser = i
		}
	}
	if lastUser < 0 {
		return nil, "", nil, fmt.Errorf("%s: no user message to judge", param)
	}
	if strings.TrimSpace(turns[lastUser].Content) == "" {
		return nil, "", nil, fmt.Errorf("%s: the last user message has no text to judge", param)
	}
	return guardhook.Messages[guard.Message](turns[:lastUser+1]), chatmsg.Beyond(turns, lastUser), skipped, nil
}

// templateKwargs are the chat_template_kwargs a request may set: the
// switches of thinking that the templates of the models served beside
// the guard take. Any other would change how the template lays out the
// prompt (GLM's clear_thinking keeps every earlier turn's reasoning, which
// the guard reads as context only), or hand it text.
var templateKwargs = map[string]func(any) bool{
	"enable_thinking": isBool,
	"thinking":        isBool,
	"reasoning_effort": func(v any) bool {
		s, ok := v.(string)
		return ok && (s == "minimal" || s == "low" || s == "medium" || s == "high")
	},
}

func isBool(v any) bool { _, ok := v.(bool); return ok }

// checkTemplateKwargs refuses chat_template_kwargs that are not an object
// of templateKwargs.
func checkTemplateKwargs(raw json.RawMessage) error {
	if chatmsg.Absent(raw) {
		return nil
	}
	var kw map[string]any
	if err := json.Unmarshal(raw, &kw); err != nil {
		return fmt.Errorf("chat_template_kwargs: want an object: %v", err)
	}
	for k, v := range kw {
		if valid := templateKwargs[k]; valid == nil || !valid(v) {
			return fmt.Errorf("chat_template_kwargs: %q=%v is not allowed: streamguard judges the prompt as the template lays it out by default, and passes only enable_thinking, thinking (true or false) and reasoning_effort (minimal, low, medium, high)", k, v)
		}
	}
	return nil
}
