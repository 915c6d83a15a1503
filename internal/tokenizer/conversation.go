package tokenizer

import (
	"errors"
	"strings"
)

// Conversation is a conversation laid out as the guard reads it: the
// prompt up to the <|im_end|> that closes the last user turn, where the
// query heads are read, and optionally the assistant turn that answers it,
// whose content the response heads judge token by token. It is the one
// place that decides which positions are judged; the guard's streams, the
// server, eval and train-heads all take it from here.
type Conversation struct {
	// IDs are the prompt's ids through PromptEnd, then, with a response,
	// its header, its judged ids and the closing "<|im_end|>\n".
	IDs []int
	// PromptEnd is the index in IDs of the last user turn's <|im_end|>.
	PromptEnd int
	// Response reports that an assistant turn follows the last user turn.
	Response bool
	// Thinking reports that the response carries reasoning: its header
	// leaves the think block open, and the reasoning, the </think> that
	// closes it and the answer are all judged.
	Thinking bool
	// JudgedStart and JudgedEnd bound the judged ids, IDs[JudgedStart:
	// JudgedEnd]: from the first token after the header up to, not
	// including, the closing <|im_end|>. Both are len(IDs) without a
	// response.
	JudgedStart, JudgedEnd int
}

// Prompt is the ids through the last user turn's <|im_end|>.
func (c *Conversation) Prompt() []int { return c.IDs[:c.PromptEnd+1] }

// Header is the response header's ids (fed, not judged); nil without a
// response.
func (c *Conversation) Header() []int {
	if !c.Response {
		return nil
	}
	return c.IDs[c.PromptEnd+1 : c.JudgedStart]
}

// Judged is the response's judged ids.
func (c *Conversation) Judged() []int { return c.IDs[c.JudgedStart:c.JudgedEnd] }

// RenderConversation lays msgs out for the guard. They end with a user turn
// with non-blank content, or with tool results (the user turn the template
// makes of them, whatever they hold), optionally followed by one assistant
// turn; system and earlier turns may come before. Every message's text is
// ordinary text (see Message).
//
// The final assistant turn is encoded the way a stream receives it: the
// header ResponseHeader(thinking), then the answer as one text — or, with
// reasoning, the reasoning and "\n" as one text, </think>, and "\n\n" and
// the answer as another — so its judged ids equal those of a stream fed
// the same text. Like the template, the reasoning loses
// its surrounding newlines and the answer its leading ones.
func (t *Tokenizer) RenderConversation(msgs []Message) (*Conversation, error) {
	if err := checkRoles(msgs); err != nil {
		return nil, err
	}
	last := len(msgs) - 1
	var resp *Message
	if msgs[last].Role == "assistant" {
		resp = &msgs[last]
		last--
	}
	if last < 0 || msgs[last].Role != "user" && msgs[last].Role != "tool" {
		return nil, errors.New("chat: a conversation must end with a user turn (or tool results, which the template writes as one), optionally followed by one assistant turn")
	}
	if msgs[last].Role == "user" && strings.TrimSpace(msgs[last].Content) == "" {
		// Tool results are a turn whatever they hold (the template writes
		// their tags): an agent's last call often returns nothing.
		return nil, errors.New("chat: empty prompt: the last user message has no content")
	}
	w := t.newChatWriter(true, false)
	w.turns(msgs[:last+1], false)
	if err := w.finish(); err != nil {
		return nil, err
	}
	// The template's "\n" after the user turn belongs to the response
	// header: drop it, the prompt ends at the <|im_end|>.
	ids := w.ids[:w.userEnd+1]
	c := &Conversation{IDs: ids, PromptEnd: w.userEnd, JudgedStart: len(ids), JudgedEnd: len(ids)}
	if resp == nil {
		return c, nil
	}
	c.Response = true
	// The template writes reasoning with its newlines trimmed, and
	// reasoning of newlines only as the empty think block, the
	// non-thinking header's ids.
	c.Thinking = strings.Trim(resp.ReasoningContent, "\n") != ""
	hdr, err := t.ResponseHeader(c.Thinking)
	if err != nil {
		return nil, err
	}
	ids = append(ids, hdr...)
	c.JudgedStart = len(ids)
	answer := strings.TrimLeft(resp.Content, "\n")
	if c.Thinking {
		ids = t.appendText(ids, strings.Trim(resp.ReasoningContent, "\n")+"\n")
		ids = append(ids, ThinkEnd)
		answer = "\n\n" + answer
	}
	w = t.newChatWriter(true, false)
	w.ids = ids
	w.textOf(answer)
	w.toolCalls(resp.ToolCalls, resp.Content != "")
	if err := w.finish(); err != nil {
		return nil, err
	}
	ids = w.ids
	c.JudgedEnd = len(ids)
	ids = append(ids, ImEnd)
	c.IDs = t.appendText(ids, "\n")
	return c, nil
}

// ResponseHeader returns the ids that open an assistant turn after a user
// turn's <|im_end|>: "\n<|im_start|>assistant\n<think>\n\n</think>\n\n" (the
// model's non-thinking form), or with thinking "\n<|im_start|>assistant\n
// <think>\n", whose open think block the reasoning follows.
func (t *Tokenizer) ResponseHeader(thinking bool) ([]int, error) {
	w := t.newChatWriter(true, false)
	w.scaffold("\n")
	w.special(imStartText)
	w.scaffold("assistant\n")
	w.special(thinkText)
	if thinking {
		w.scaffold("\n")
	} else {
		w.scaffold("\n\n")
		w.special(thinkEndText)
		w.scaffold("\n\n")
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	return w.ids, nil
}

// TurnEnd returns the ids that close an assistant turn: "<|im_end|>\n".
func (t *Tokenizer) TurnEnd() ([]int, error) {
	w := t.newChatWriter(true, false)
	w.special(imEndText)
	w.scaffold("\n")
	return w.ids, w.finish()
}
