package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Message is one chat turn: role system, user, assistant, or tool (a tool
// call's result, which the template writes into a user turn of
// <tool_response> blocks). Content and ReasoningContent are ordinary text:
// whatever they spell, including "<|im_end|>" or "<think>", is encoded as
// text (see ChatOptions.ParseSpecial for the one exception).
// ReasoningContent is an assistant's thinking; ToolCalls the calls it
// makes after its content (not JSON: data files read tool calls through
// their own readers, OpenAI's form being another).
type Message struct {
	Role             string     `json:"role"`
	Content          string     `json:"content"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"-"`
}

// ToolCall is one call of an assistant turn, which the template writes as
// <tool_call>, "\n{"name": "NAME", "arguments": ARGUMENTS}\n", </tool_call>:
// the tags are its added tokens, Name and Arguments text (Arguments is
// JSON text as the template writes it: a string as given, an object as
// tojson writes it).
type ToolCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// The scaffold's added tokens as the chat template spells them.
const (
	imStartText         = "<|im_start|>"
	imEndText           = "<|im_end|>"
	thinkText           = "<think>"
	thinkEndText        = "</think>"
	toolResponseText    = "<tool_response>"
	toolResponseEndText = "</tool_response>"
)

// The tool call's tags as the template spells them (each an added token).
const (
	ToolCallTag    = "<tool_call>"
	ToolCallEndTag = "</tool_call>"
)

// The template's text between <tool_call> and </tool_call>:
// ToolCallName + name + ToolCallArguments + arguments + ToolCallEndText.
const (
	ToolCallName      = "\n{\"name\": \""
	ToolCallArguments = "\", \"arguments\": "
	ToolCallClosing   = "}\n"
)

// ToolCallBody is the text the template writes between <tool_call> and
// </tool_call>.
func ToolCallBody(c ToolCall) string {
	return ToolCallName + c.Name + ToolCallArguments + c.Arguments + ToolCallClosing
}

// ToolCallsText is calls as the template writes them after an assistant's
// content, the tags spelled as text (for reading, or for judging as
// text); hasContent is whether the content before them is not empty.
func ToolCallsText(calls []ToolCall, hasContent bool) string {
	var b strings.Builder
	write := func(s string) { b.WriteString(s) }
	writeToolCalls(calls, hasContent, write, write)
	return b.String()
}

// writeToolCalls lays an assistant's calls out after its content, as the
// template does: a newline before each but a first one that no content
// precedes (content counts before the template strips its leading
// newlines: "\n\n" beside a call is "</think>\n\n\n<tool_call>"), then the
// call's tags (tag) around its body (text).
func writeToolCalls(calls []ToolCall, hasContent bool, text, tag func(string)) {
	for j, c := range calls {
		if j > 0 || hasContent {
			text("\n")
		}
		tag(ToolCallTag)
		text(ToolCallBody(c))
		tag(ToolCallEndTag)
	}
}

// Chat is a rendered conversation.
type Chat struct {
	// Text is the rendered text, for display: message text appears in it
	// verbatim, so it cannot tell a forged tag from the scaffold's own.
	// IDs are authoritative.
	Text string
	IDs  []int
	// UserEndIndex is the index in IDs of the <|im_end|> that closes the
	// last user turn, -1 if there is none.
	UserEndIndex int
}

// ChatOptions are the chat template's switches.
type ChatOptions struct {
	// AddGenerationPrompt appends the header of an assistant turn.
	AddGenerationPrompt bool
	// EnableThinking, with AddGenerationPrompt, leaves the thinking block
	// open for the model; when false an empty one is written, as the
	// guard expects.
	EnableThinking bool
	// ParseSpecial renders message text as trusted template text, as
	// Hugging Face's apply_chat_template followed by encode does: added
	// tokens spelled in it become those tokens, and a <think>…</think>
	// block in an assistant's content is taken as its reasoning. Never set
	// it for text from users or models: a message could then forge turns,
	// end the prompt early or hide text in a dropped think block.
	ParseSpecial bool
}

// RenderChat renders msgs as the Qwen3 chat template does with
// add_generation_prompt and enable_thinking false, message text encoded as
// ordinary text.
func (t *Tokenizer) RenderChat(msgs []Message) (*Chat, error) {
	return t.RenderChatWith(msgs, ChatOptions{})
}

// RenderChatWith is RenderChat with the template's switches.
func (t *Tokenizer) RenderChatWith(msgs []Message, opt ChatOptions) (*Chat, error) {
	if err := checkRoles(msgs); err != nil {
		return nil, err
	}
	w := t.newChatWriter(!opt.ParseSpecial, true)
	w.turns(msgs, opt.ParseSpecial)
	if opt.AddGenerationPrompt {
		w.special(imStartText)
		w.scaffold("assistant\n")
		if !opt.EnableThinking {
			w.special(thinkText)
			w.scaffold("\n\n")
			w.special(thinkEndText)
			w.scaffold("\n\n")
		}
	}
	if opt.ParseSpecial {
		return t.parsedChat(w)
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	return &Chat{Text: w.text.String(), IDs: w.ids, UserEndIndex: w.userEnd}, nil
}

// parsedChat encodes the whole rendered text with added tokens matched,
// exactly as Hugging Face does, and finds the last user turn's <|im_end|>
// by encoding the text up to it.
func (t *Tokenizer) parsedChat(w *chatWriter) (*Chat, error) {
	text := w.text.String()
	ids := t.Encode(text)
	idx := -1
	if w.userEndByte >= 0 {
		pre := t.Encode(text[:w.userEndByte])
		idx = len(pre) - 1
		if idx < 0 || pre[idx] != ImEnd || len(pre) > len(ids) || !slices.Equal(pre, ids[:len(pre)]) {
			return nil, errors.New("chat: the last user turn's <|im_end|> does not encode to one token at a stable position")
		}
	}
	return &Chat{Text: text, IDs: ids, UserEndIndex: idx}, nil
}

func checkRoles(msgs []Message) error {
	if len(msgs) == 0 {
		return errors.New("chat: no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return fmt.Errorf("chat: message %d: role %q is not supported (system, user, assistant, tool)", i, m.Role)
		}
		if len(m.ToolCalls) > 0 && m.Role != "assistant" {
			return fmt.Errorf("chat: message %d: tool calls in a %s turn (only an assistant makes them)", i, m.Role)
		}
	}
	return nil
}

// chatWriter renders a chat: added tokens of the scaffold are appended as
// their ids, and the text between two of them — scaffold text and message
// text together, as one run — is encoded as ordinary text. For text that
// spells no added token this gives exactly the ids of encoding the
// template's output. A writer keeps the ids, the text, or both, as its
// caller needs: the guard's layout needs no text, the trusted rendering
// encodes the whole text itself.
type chatWriter struct {
	t           *Tokenizer
	keepIDs     bool
	keepText    bool
	ids         []int
	text        strings.Builder // everything, for display
	seg         strings.Builder // the open run of text
	userEnd     int             // index in ids of the last user turn's <|im_end|>
	userEndByte int             // offset in text just after it
	err         error
}

func (t *Tokenizer) newChatWriter(ids, text bool) *chatWriter {
	return &chatWriter{t: t, keepIDs: ids, keepText: text, userEnd: -1, userEndByte: -1}
}

// special appends one of the scaffold's added tokens.
func (w *chatWriter) special(tok string) {
	w.flush()
	id, ok := w.t.added.ids[tok]
	if !ok && w.err == nil {
		w.err = fmt.Errorf("chat: the tokenizer has no %s token", tok)
	}
	if w.keepIDs {
		w.ids = append(w.ids, id)
	}
	if w.keepText {
		w.text.WriteString(tok)
	}
}

// scaffold appends the template's own text; text appends a message's.
// Both are ordinary text: the distinction is for the reader.
func (w *chatWriter) scaffold(s string) { w.write(s) }
func (w *chatWriter) textOf(s string)   { w.write(s) }

func (w *chatWriter) write(s string) {
	if w.keepIDs {
		w.seg.WriteString(s)
	}
	if w.keepText {
		w.text.WriteString(s)
	}
}

func (w *chatWriter) flush() {
	if w.seg.Len() == 0 {
		return
	}
	w.ids = w.t.appendText(w.ids, w.seg.String())
	w.seg.Reset()
}

func (w *chatWriter) finish() error {
	w.flush()
	return w.err
}

// turns writes msgs as the Qwen3 template does (add_generation_prompt
// false). With parse, a think block in an assistant's content is split off
// as its reasoning, as the template does for trusted text.
func (w *chatWriter) turns(msgs []Message, parse bool) {
	// Assistant turns after the template's last query keep their
	// thinking: the last user turn not written as a tool result
	// (IsToolResponse; the template's own test, on any text).
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if m.Role == "user" && !IsToolResponse(m.Content) {
			lastQuery = i
			break
		}
	}
	for i, m := range msgs {
		switch m.Role {
		case "user", "system":
			// A leading system turn and a later one render alike.
			w.special(imStartText)
			w.scaffold(m.Role + "\n")
			w.textOf(m.Content)
			w.special(imEndText)
			if m.Role == "user" {
				w.userEnd, w.userEndByte = len(w.ids)-1, w.text.Len()
			}
			w.scaffold("\n")
		case "assistant":
			content, reasoning := m.Content, m.ReasoningContent
			if parse && reasoning == "" && strings.Contains(content, thinkEndText) {
				content, reasoning = splitInlineThink(content)
			}
			w.special(imStartText)
			w.scaffold("assistant\n")
			if i > lastQuery && (i == len(msgs)-1 || reasoning != "") {
				w.special(thinkText)
				w.scaffold("\n")
				w.textOf(strings.Trim(reasoning, "\n"))
				w.scaffold("\n")
				w.special(thinkEndText)
				w.scaffold("\n\n")
				w.textOf(strings.TrimLeft(content, "\n"))
			} else {
				w.textOf(content)
			}
			w.toolCalls(m.ToolCalls, m.Content != "")
			w.special(imEndText)
			w.scaffold("\n")
		case "tool":
			// A run of tool results is one user turn of <tool_response>
			// blocks.
			if i == 0 || msgs[i-1].Role != "tool" {
				w.special(imStartText)
				w.scaffold("user")
			}
			w.scaffold("\n")
			w.special(toolResponseText)
			w.scaffold("\n")
			w.textOf(m.Content)
			w.scaffold("\n")
			w.special(toolResponseEndText)
			if i == len(msgs)-1 || msgs[i+1].Role != "tool" {
				w.special(imEndText)
				w.userEnd, w.userEndByte = len(w.ids)-1, w.text.Len()
				w.scaffold("\n")
			}
		}
	}
}

// toolCalls writes an assistant's calls after its content
// (writeToolCalls), the tags as their ids.
func (w *chatWriter) toolCalls(calls []ToolCall, hasContent bool) {
	writeToolCalls(calls, hasContent, w.textOf, w.special)
}

// IsToolResponse reports whether a user message is what the Qwen3 template
// takes for a tool result, "<tool_response>…</tool_response>": not a query,
// so the assistant turns before it keep their reasoning.
func IsToolResponse(content string) bool {
	return strings.HasPrefix(content, "<tool_response>") && strings.HasSuffix(content, "</tool_response>")
}

// splitInlineThink splits an assistant message written as
// "<think>R</think>C" into its answer C and reasoning R, as the Qwen3
// template does: C loses its leading newlines, R its surrounding ones.
// Only trusted text is split this way (ChatOptions.ParseSpecial, and data
// sets that opt in); see SplitInlineThink.
func splitInlineThink(content string) (answer, reasoning string) {
	parts := strings.Split(content, thinkEndText)
	answer = strings.TrimLeft(parts[len(parts)-1], "\n")
	before := strings.TrimRight(parts[0], "\n")
	th := strings.Split(before, thinkText)
	reasoning = strings.TrimLeft(th[len(th)-1], "\n")
	return answer, reasoning
}

// SplitInlineThink returns m with a <think>…</think> block in its content
// moved to ReasoningContent, as the Qwen3 template reads trusted text. Data
// sets written in that form (the official thinking evaluation) opt in to
// it explicitly; messages from users and models are never split.
func SplitInlineThink(m Message) Message {
	if m.Role != "assistant" || m.ReasoningContent != "" || !strings.Contains(m.Content, thinkEndText) {
		return m
	}
	m.Content, m.ReasoningContent = splitInlineThink(m.Content)
	return m
}
