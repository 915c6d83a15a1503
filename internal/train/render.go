package train

import (
	"errors"
	"fmt"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Token ids of the chat scaffold (the Qwen3 vocabulary).
const (
	idNewline       = 198
	idDoubleNewline = 271
	idAssistant     = 77091
)

// The assistant-turn headers, as the guard package judges them: with
// thinking disabled "\n<|im_start|>assistant\n<think>\n\n</think>\n\n", with
// reasoning "\n<|im_start|>assistant\n<think>\n". The judged tokens start
// right after the header.
var (
	responseHeader = []int{idNewline, tokenizer.ImStart, idAssistant, idNewline,
		tokenizer.Think, idDoubleNewline, tokenizer.ThinkEnd, idDoubleNewline}
	thinkingHeader = []int{idNewline, tokenizer.ImStart, idAssistant, idNewline, tokenizer.Think, idNewline}
)

// Conversation is an example rendered for the backbone, with the
// positions whose verdicts the guard reads.
type Conversation struct {
	// IDs are the rendered token ids up to the last judged position (the
	// hidden state of a position depends only on the ids up to it).
	IDs []int
	// PromptPos is the index of the <|im_end|> closing the last user turn.
	PromptPos int
	// ResponsePos are the positions of the judged tokens of the final
	// assistant turn, response token 0 first; empty without one.
	ResponsePos []int
}

// Render renders msgs with the Qwen3 chat template and finds the judged
// positions exactly as guard.Model.Moderate does: the prompt verdict at the
// last user turn's <|im_end|>, response verdicts on the assistant's content
// tokens (after "</think>\n\n", or after "<think>\n" when the turn carries
// reasoning) up to, not including, the closing <|im_end|>. A test checks
// the positions against Moderate's.
func Render(tok *tokenizer.Tokenizer, msgs []tokenizer.Message) (*Conversation, error) {
	chat, err := tok.RenderChat(msgs)
	if err != nil {
		return nil, err
	}
	userEnd := chat.UserEndIndex
	if userEnd < 0 {
		return nil, errors.New("the rendered chat has no user turn")
	}
	c := &Conversation{PromptPos: userEnd}
	if msgs[len(msgs)-1].Role != "assistant" {
		c.IDs = chat.IDs[:userEnd+1]
		return c, nil
	}
	rest := chat.IDs[userEnd+1:]
	var hdr int
	switch {
	case hasPrefix(rest, responseHeader):
		hdr = len(responseHeader)
	case hasPrefix(rest, thinkingHeader):
		hdr = len(thinkingHeader)
	case hasPrefix(rest, responseHeader[:4]):
		hdr = 4
	default:
		return nil, fmt.Errorf("after the last user turn expected an assistant turn, got ids %v", rest[:min(len(rest), 8)])
	}
	end := len(rest)
	switch {
	case hasSuffix(rest, []int{tokenizer.ImEnd, idNewline}):
		end -= 2
	case hasSuffix(rest, []int{tokenizer.ImEnd}):
		end--
	}
	for i := hdr; i < end; i++ {
		c.ResponsePos = append(c.ResponsePos, userEnd+1+i)
	}
	last := userEnd
	if n := len(c.ResponsePos); n > 0 {
		last = c.ResponsePos[n-1]
	}
	c.IDs = chat.IDs[:last+1]
	return c, nil
}

func hasPrefix(s, p []int) bool {
	if len(s) < len(p) {
		return false
	}
	for i := range p {
		if s[i] != p[i] {
			return false
		}
	}
	return true
}

func hasSuffix(s, p []int) bool { return len(s) >= len(p) && hasPrefix(s[len(s)-len(p):], p) }
