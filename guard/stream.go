package guard

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Token ids of the chat scaffold (spec §4).
const (
	idNewline       = 198
	idDoubleNewline = 271
	idAssistant     = 77091
	idUser          = 872
)

// responseHeader is what follows a user turn's <|im_end|> before the
// assistant's content with thinking disabled:
// "\n<|im_start|>assistant\n<think>\n\n</think>\n\n".
var responseHeader = []int{idNewline, tokenizer.ImStart, idAssistant, idNewline,
	tokenizer.Think, idDoubleNewline, tokenizer.ThinkEnd, idDoubleNewline}

// thinkingHeader opens an assistant turn whose reasoning is judged:
// "\n<|im_start|>assistant\n<think>\n".
var thinkingHeader = []int{idNewline, tokenizer.ImStart, idAssistant, idNewline, tokenizer.Think, idNewline}

// phase is where the queued token sequence ends.
type phase int

const (
	phaseFresh    phase = iota // nothing queued yet
	phasePrompt                // after a user turn's <|im_end|>
	phaseResponse              // inside an assistant turn
	phaseTurnEnd               // after an assistant turn's "<|im_end|>\n"
)

type itemKind uint8

const (
	itemContext   itemKind = iota // prompt tokens: fed, no verdict
	itemPromptEnd                 // <|im_end|> of a user turn: query heads
	itemScaffold                  // assistant-turn token fed but not judged
	itemResponse                  // judged with the response heads
)

// item is one queued token.
type item struct {
	id    int
	kind  itemKind
	begin bool // first token of an assistant turn: reset the response state
	text  string
}

// Stream is one conversation's state: its KV cache, the tokens queued for
// the next forward, and the policy state of the current response.
type Stream struct {
	m      *Model
	mu     sync.Mutex
	cache  *qwen3.Cache
	policy Policy
	queue  []item
	phase  phase
	enc    *tokenizer.StreamEncoder
	dec    *tokenizer.StreamDecoder

	resp       responseState
	lastPrompt *PromptVerdict
	turns      int
	inStep     bool
	closed     bool
}

// ErrClosed is returned by operations on a closed stream.
var ErrClosed = errors.New("guard: stream is closed")

// ErrContextLength is wrapped by the error of an operation that would take a
// stream past the model's context (max_position_embeddings). The input is
// the caller's to shorten: nothing was queued.
var ErrContextLength = errors.New("guard: context length exceeded")

// NewStream starts a conversation with the model's default policy. Its
// cache memory grows with use; Close releases it.
func (m *Model) NewStream() *Stream {
	return &Stream{
		m: m, cache: m.net.NewCache(), policy: m.policy, resp: newResponseState(),
		enc: m.tok.NewStreamEncoder(), dec: m.tok.NewStreamDecoder(false),
	}
}

// SetPolicy replaces the stream's policy for tokens judged from now on.
func (s *Stream) SetPolicy(p Policy) error {
	l := s.m.net.Labels
	if err := p.check(l.ResponseCategory, l.QueryCategory); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
	return nil
}

// Close releases the cache. It is safe to call more than once; a stream
// being stepped is released when the step ends.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.queue = nil
	if !s.inStep {
		s.cache.Release()
	}
}

// Len is the number of tokens fed so far; Pending the number queued.
func (s *Stream) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.Len()
}

// Pending is the number of tokens queued for the next step.
func (s *Stream) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// CacheBytes is the KV-cache memory the stream holds.
func (s *Stream) CacheBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.Bytes()
}

// Flagged reports the response token index at which the current response
// was flagged (the token completing a run of Debounce non-safe tokens).
func (s *Stream) Flagged() (index int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resp.flaggedAt, s.resp.flaggedAt >= 0
}

// Decision applies the official final rule to the current response's
// tokens judged so far.
func (s *Stream) Decision() Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resp.decision(&s.policy)
}

// LastPrompt is the verdict on the most recent user turn (nil before one).
func (s *Stream) LastPrompt() *PromptVerdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPrompt
}

// push queues items atomically after checking the stream can take them.
func (s *Stream) push(items []item) error {
	if s.closed {
		return ErrClosed
	}
	vocab := s.m.net.VocabSize()
	for _, it := range items {
		if it.id < 0 || it.id >= vocab {
			return fmt.Errorf("guard: token id %d outside the vocabulary [0, %d)", it.id, vocab)
		}
	}
	if n, max := s.cache.Len()+len(s.queue)+len(items), s.cache.MaxLen(); n > max {
		return fmt.Errorf("%w: the stream would reach %d tokens, more than the model's max_position_embeddings (%d); start a new stream", ErrContextLength, n, max)
	}
	s.queue = append(s.queue, items...)
	return nil
}

func contextItems(ids []int, kind itemKind) []item {
	items := make([]item, len(ids))
	for i, id := range ids {
		items[i] = item{id: id, kind: kind}
	}
	return items
}

// assistantItems decodes ids for display and tags them.
func (s *Stream) assistantItems(ids []int, kind itemKind) []item {
	items := make([]item, len(ids))
	for i, id := range ids {
		items[i] = item{id: id, kind: kind, text: s.dec.Add(id)}
	}
	return items
}

// closeTurn returns the tokens that must precede a new user turn.
func (s *Stream) closeTurn() []item {
	switch s.phase {
	case phasePrompt:
		return contextItems([]int{idNewline}, itemContext)
	case phaseResponse:
		items := s.assistantItems(s.enc.Flush(), itemResponse)
		return append(items, s.assistantItems([]int{tokenizer.ImEnd, idNewline}, itemScaffold)...)
	}
	return nil
}

// QueuePrompt queues a user turn (with any system or earlier turns in msgs)
// rendered by the Qwen3 chat template, up to and including the <|im_end|>
// that closes the last user turn, where the prompt verdict is read. The last
// message must be the user's. On a stream that already holds a
// conversation, msgs continue it (an open response is ended first).
func (s *Stream) QueuePrompt(msgs []Message) error {
	if len(msgs) == 0 {
		return errors.New("guard: empty prompt: no messages")
	}
	last := msgs[len(msgs)-1]
	if last.Role != "user" {
		return fmt.Errorf("guard: the last message must be the user's turn, got role %q (feed a response with AppendText or AppendIDs)", last.Role)
	}
	if strings.TrimSpace(last.Content) == "" {
		return errors.New("guard: empty prompt: the last user message has no content")
	}
	chat, err := s.m.tok.RenderChat(msgs)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	if chat.UserEndIndex < 0 {
		return errors.New("guard: the rendered chat has no user turn")
	}
	return s.QueuePromptIDs(chat.IDs[:chat.UserEndIndex+1])
}

// QueuePromptIDs queues an already tokenized prompt; its last id must be
// the <|im_end|> closing the user turn.
func (s *Stream) QueuePromptIDs(ids []int) error {
	if len(ids) == 0 {
		return errors.New("guard: empty prompt: no token ids")
	}
	if ids[len(ids)-1] != tokenizer.ImEnd {
		return fmt.Errorf("guard: prompt ids must end with <|im_end|> (%d), where the prompt verdict is read; got %d", tokenizer.ImEnd, ids[len(ids)-1])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	items := s.closeTurn()
	items = append(items, contextItems(ids[:len(ids)-1], itemContext)...)
	items = append(items, item{id: tokenizer.ImEnd, kind: itemPromptEnd})
	if err := s.push(items); err != nil {
		return err
	}
	s.phase = phasePrompt
	return nil
}

// StartResponse queues the assistant header. With thinking false it is
// followed by an empty think block (the model's non-thinking form) and
// nothing of it is judged; with thinking true the think block is left open
// and the tokens that follow (the reasoning) are judged. AppendIDs and
// AppendText call StartResponse(false) when no response is open.
func (s *Stream) StartResponse(thinking bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startResponse(thinking)
}

func (s *Stream) startResponse(thinking bool) error {
	switch s.phase {
	case phaseFresh:
		return errors.New("guard: no prompt yet: judge the user's turn before its response")
	case phaseResponse:
		return errors.New("guard: a response is already open")
	case phaseTurnEnd:
		return errors.New("guard: the previous response ended; judge the next user turn first")
	}
	hdr := responseHeader
	if thinking {
		hdr = thinkingHeader
	}
	items := s.assistantItems(hdr, itemScaffold)
	items[0].begin = true
	if err := s.push(items); err != nil {
		return err
	}
	s.phase = phaseResponse
	return nil
}

func (s *Stream) ensureResponse() error {
	if s.phase == phaseResponse {
		return nil
	}
	return s.startResponse(false)
}

// QueueIDs queues response tokens.
func (s *Stream) QueueIDs(ids []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.ensureResponse(); err != nil {
		return err
	}
	return s.push(s.assistantItems(ids, itemResponse))
}

// QueueText queues response text. It is re-tokenized incrementally: ids are
// queued once no later text can change them, so the tokens of a chunk may
// be judged with a later chunk; QueueFlushText ends the text. An error
// (the stream would exceed max_position_embeddings) leaves the text
// consumed: the conversation cannot continue on this stream.
func (s *Stream) QueueText(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.ensureResponse(); err != nil {
		return err
	}
	return s.push(s.assistantItems(s.enc.Write(text), itemResponse))
}

// QueueFlushText queues the tokens QueueText held back.
func (s *Stream) QueueFlushText() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.phase != phaseResponse {
		return nil
	}
	return s.push(s.assistantItems(s.enc.Flush(), itemResponse))
}

// QueueEndResponse flushes the text and closes the assistant turn with
// "<|im_end|>\n" (not judged), so that the next user turn can follow.
func (s *Stream) QueueEndResponse() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.phase != phaseResponse {
		return errors.New("guard: no open response to end")
	}
	if err := s.push(s.closeTurn()); err != nil {
		return err
	}
	s.phase = phaseTurnEnd
	return nil
}

// queueConversation queues a rendered conversation whose last user turn
// ends at userEnd, followed by at most one assistant turn, judging the
// assistant's content as the official evaluation does: from the first
// token after "</think>\n\n" (or after "<think>\n" when the turn has
// reasoning) up to, not including, the closing <|im_end|>.
func (s *Stream) queueConversation(ids []int, userEnd int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase != phaseFresh {
		return errors.New("guard: a whole conversation needs a fresh stream")
	}
	items := contextItems(ids[:userEnd], itemContext)
	items = append(items, item{id: ids[userEnd], kind: itemPromptEnd})
	rest := ids[userEnd+1:]
	ph := phasePrompt
	if len(rest) > 0 {
		hdr := 0
		if hasPrefix(rest, responseHeader) {
			hdr = len(responseHeader)
		} else if hasPrefix(rest, thinkingHeader) {
			hdr = len(thinkingHeader)
		} else if hasPrefix(rest, responseHeader[:4]) {
			hdr = 4
		} else {
			return fmt.Errorf("guard: after the last user turn expected an assistant turn, got ids %v", rest[:min(len(rest), 8)])
		}
		end := len(rest)
		if hasSuffix(rest, []int{tokenizer.ImEnd, idNewline}) {
			end -= 2
		} else if hasSuffix(rest, []int{tokenizer.ImEnd}) {
			end--
		}
		if end < hdr {
			end = hdr
		}
		a := s.assistantItems(rest[:hdr], itemScaffold)
		a[0].begin = true
		a = append(a, s.assistantItems(rest[hdr:end], itemResponse)...)
		a = append(a, s.assistantItems(rest[end:], itemScaffold)...)
		items = append(items, a...)
		ph = phaseTurnEnd
		if end == len(rest) {
			ph = phaseResponse
		}
	}
	if err := s.push(items); err != nil {
		return err
	}
	s.phase = ph
	return nil
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
