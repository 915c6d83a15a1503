package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Message is one chat turn. ReasoningContent, when set, is an assistant's
// thinking; otherwise a <think>…</think> block inside Content is taken as
// it, as the Qwen3 chat template does.
type Message struct {
	Role             string `json:"role"`
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// Chat is a rendered conversation.
type Chat struct {
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
}

// RenderChat renders msgs as the Qwen3 chat template does with
// add_generation_prompt and enable_thinking false, the form the guard
// scores.
func (t *Tokenizer) RenderChat(msgs []Message) (*Chat, error) {
	return t.RenderChatWith(msgs, ChatOptions{})
}

// RenderChatWith is RenderChat with the template's switches. Roles are
// system, user and assistant; tool calls are not rendered.
func (t *Tokenizer) RenderChatWith(msgs []Message, opt ChatOptions) (*Chat, error) {
	text, userEnd, err := renderChatText(msgs, opt)
	if err != nil {
		return nil, err
	}
	ids := t.Encode(text)
	idx := -1
	if userEnd >= 0 {
		// Text up to the closing <|im_end|> encodes to a prefix of the ids
		// because an added token ends every segment; check it all the same
		// rather than trust that for every tokenizer.
		pre := t.Encode(text[:userEnd])
		idx = len(pre) - 1
		if idx < 0 || pre[idx] != ImEnd || len(pre) > len(ids) || !slices.Equal(pre, ids[:len(pre)]) {
			return nil, errors.New("chat: the last user turn's <|im_end|> does not encode to one token at a stable position")
		}
	}
	return &Chat{Text: text, IDs: ids, UserEndIndex: idx}, nil
}

// renderChatText returns the rendered text and the byte offset just after
// the <|im_end|> that closes the last user turn (-1 if none).
func renderChatText(msgs []Message, opt ChatOptions) (string, int, error) {
	if len(msgs) == 0 {
		return "", -1, errors.New("chat: no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", -1, fmt.Errorf("chat: message %d: role %q is not supported (system, user, assistant)", i, m.Role)
		}
	}
	// The last user query: assistant turns after it keep their thinking.
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if m.Role == "user" && !(strings.HasPrefix(m.Content, "<tool_response>") && strings.HasSuffix(m.Content, "</tool_response>")) {
			lastQuery = i
			break
		}
	}
	var b strings.Builder
	userEnd := -1
	for i, m := range msgs {
		switch {
		case m.Role == "user" || m.Role == "system":
			// A leading system turn and a later one render alike.
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>")
			if m.Role == "user" {
				userEnd = b.Len()
			}
			b.WriteString("\n")
		case m.Role == "assistant":
			content, reasoning := m.Content, m.ReasoningContent
			if reasoning == "" && strings.Contains(content, "</think>") {
				parts := strings.Split(content, "</think>")
				content = strings.TrimLeft(parts[len(parts)-1], "\n")
				before := strings.TrimRight(parts[0], "\n")
				th := strings.Split(before, "<think>")
				reasoning = strings.TrimLeft(th[len(th)-1], "\n")
			}
			b.WriteString("<|im_start|>assistant\n")
			if i > lastQuery && (i == len(msgs)-1 || reasoning != "") {
				b.WriteString("<think>\n" + strings.Trim(reasoning, "\n") + "\n</think>\n\n" + strings.TrimLeft(content, "\n"))
			} else {
				b.WriteString(content)
			}
			b.WriteString("<|im_end|>\n")
		}
	}
	if opt.AddGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
		if !opt.EnableThinking {
			b.WriteString("<think>\n\n</think>\n\n")
		}
	}
	return b.String(), userEnd, nil
}
