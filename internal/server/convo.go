package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Errors of stream operations, mapped to HTTP statuses by writeError.
var (
	ErrTooManyStreams = errors.New("the tenant's stream limit is reached")
	ErrStreamTooLong  = errors.New("the stream would exceed its maximum length")
	ErrStreamClosed   = errors.New("the stream is closed")
)

// tooLong is the error of input that would take a stream past its length
// limit (--max-stream-tokens, at most the model's context). It is the
// client's error, answered 400 context_length_exceeded, and matches both
// ErrStreamTooLong and guard.ErrContextLength.
type tooLong struct{ n, limit int }

func (e tooLong) Error() string {
	return fmt.Sprintf("context length exceeded: the input would take the stream to %d tokens, more than its limit of %d; shorten the input or start a new stream", e.n, e.limit)
}

func (e tooLong) Is(target error) bool {
	return target == ErrStreamTooLong || target == guard.ErrContextLength
}

// badRequest marks an error caused by the request's content.
type badRequest struct{ err error }

func (e badRequest) Error() string { return e.err.Error() }
func (e badRequest) Unwrap() error { return e.err }

// streamEnded marks an error after which the stream cannot continue.
type streamEnded struct{ err error }

func (e streamEnded) Error() string { return e.err.Error() }
func (e streamEnded) Unwrap() error { return e.err }

// headerSlack covers the assistant header (at most 8 scaffold tokens) and
// the "<|im_end|>\n" that ends a turn, which an operation may queue besides
// its own tokens.
const headerSlack = 11

// convo is one moderated conversation: a guard stream with its share of
// the KV budget. Its methods must be called by one goroutine at a time.
type convo struct {
	srv    *Server
	tenant *Tenant
	id     string // for the audit log; random for sessions
	s      *guard.Stream

	charged int64 // KV positions charged to the budget
	// floor is the cache size, in positions, the conversation keeps
	// charged whatever it holds: its first prompt plus the response
	// reserve, so that a stream admitted can grow that far without
	// meeting a full budget.
	floor   int
	reserve int
	flagged bool // the current response's flag was audited
	closed  bool
	ended   error
	// lead: the response has no text yet, so the leading newlines of text
	// appended through the streams API are dropped, as the chat template
	// drops an answer's (the proxy's feeder drops them from upstream text).
	lead bool
}

// leadText is text appended through the streams API less the newlines
// that begin a response's text (see lead). Once it is taken, tookText
// records it.
func (c *convo) leadText(text string) string {
	if !c.lead {
		return text
	}
	return strings.TrimLeft(text, "\n")
}

// tookText records that text from leadText was taken: the response has
// text once it is not empty.
func (c *convo) tookText(text string) { c.lead = c.lead && text == "" }

// leadAfter is lead after a conversation that ends with msgs' last turn:
// a user turn, or an assistant answer with no text (content of newlines
// only) and no tool calls, leaves the response's text to begin.
func leadAfter(msgs []tokenizer.Message) bool {
	last := msgs[len(msgs)-1]
	return last.Role != "assistant" || strings.TrimLeft(last.Content, "\n") == "" && len(last.ToolCalls) == 0
}

// openConvo starts a conversation for t, within its stream limit, with
// reserve positions of response room charged from its first prompt on.
func (srv *Server) openConvo(t *Tenant, id string, reserve int) (*convo, error) {
	if n := t.open.Add(1); t.MaxStreams > 0 && n > int64(t.MaxStreams) {
		t.open.Add(-1)
		srv.metrics.rejected("streams")
		return nil, ErrTooManyStreams
	}
	s := srv.model.NewStream()
	// The guard holds the stream to the server's length limit: an
	// operation that would pass it is refused whole, nothing queued.
	err := s.SetPolicy(t.Policy) // checked at startup
	if err == nil {
		err = s.SetMaxTokens(srv.maxStreamTokens) // at most the context (New)
	}
	if err != nil {
		t.open.Add(-1)
		return nil, err
	}
	srv.metrics.openStreams.Add(1)
	return &convo{srv: srv, tenant: t, id: id, s: s, reserve: reserve}, nil
}

// close ends the conversation, releases its memory, and returns the
// current response's decision.
func (c *convo) close(reason string) guard.Decision {
	d := c.s.Decision()
	if !c.closed {
		c.closed = true
		c.s.Close()
		c.srv.budget.release(c.tenant.Name, c.charged)
		c.charged = 0
		c.tenant.open.Add(-1)
		c.srv.metrics.openStreams.Add(-1)
		c.srv.auditClose(c, reason, d)
	}
	if c.ended == nil {
		c.ended = ErrStreamClosed
	}
	return d
}

// run charges the budget for up to maxNew more positions, queues with
// queue, and has the scheduler judge what was queued.
// certain is the number of tokens the operation queues for sure: when
// they alone exceed the stream's length limit, it is refused before
// anything is consumed (the exact check follows the queueing).
func (c *convo) run(ctx context.Context, certain, maxNew int, queue func() error) (Result, error) {
	if c.ended != nil {
		return Result{}, c.ended
	}
	if n, lim := c.s.Len()+certain, c.srv.maxStreamTokens; n > lim {
		return Result{}, tooLong{n, lim}
	}
	if c.s.Len() == 0 && c.floor == 0 {
		c.floor = certain + c.reserve
	}
	// The charge is an upper bound (text counted as tokenizer.MaxIDs, as
	// NFC may lengthen it), never more than the stream may hold:
	// tokens past the limit end the stream below before they are run. So a
	// charge always fits the whole budget (New holds streams to it) and is
	// refused only when the budget is full; settle returns what the
	// operation did not use.
	if err := c.charge(ctx, min(max(c.s.Len()+maxNew, c.floor), c.srv.maxStreamTokens)); err != nil {
		if c.s.Len() == 0 {
			c.floor = 0
		}
		return Result{}, err
	}
	if err := queue(); err != nil {
		c.settle()
		if errors.Is(err, guard.ErrClosed) {
			return Result{}, ErrStreamClosed
		}
		return Result{}, badRequest{err}
	}
	// The guard refused whatever would pass the stream's limit, so n
	// fits: at most the charge's cap, which the bound above reached.
	if want := c.srv.budget.capBound(c.s.Len() + c.s.Pending()); want > c.charged {
		c.srv.budget.forceAcquire(c.tenant.Name, want-c.charged) // not reached: the bound holds
		c.charged = want
	}
	return c.submit(ctx)
}

// submit runs the stream's queued work through the scheduler and records
// its verdicts; a stream whose work could not run is ended.
func (c *convo) submit(ctx context.Context) (Result, error) {
	res, err := c.srv.sched.Submit(ctx, c.s)
	if err != nil {
		if errors.Is(err, ErrShuttingDown) {
			c.end(streamEnded{err})
		} else {
			c.end(streamEnded{fmt.Errorf("the stream was closed: %w", err)})
		}
		return Result{}, c.ended
	}
	c.settle()
	c.observe(&res)
	return res, nil
}

// charge makes the budget cover a cache of n positions, waiting for room
// as the budget allows.
func (c *convo) charge(ctx context.Context, n int) error {
	want := c.srv.budget.capBound(n)
	if want <= c.charged {
		return nil
	}
	if err := c.srv.budget.acquire(ctx, c.tenant.Name, want-c.charged, c.charged > 0); err != nil {
		c.srv.metrics.rejected("kv_budget")
		return ErrBudget
	}
	c.charged = want
	return nil
}

// settle returns the charge beyond what the cache can hold now.
func (c *convo) settle() {
	// Held text is tokens to come (at least MinIDs of its bytes): charged,
	// so that the budget bounds what streams holding it keep too.
	n := c.s.Len() + c.s.Pending() + guardhook.Tokenizer(c.srv.model).MinIDs(c.s.HeldBytes())
	want := c.srv.budget.capBound(max(n, c.floor))
	if want < c.charged {
		c.srv.budget.release(c.tenant.Name, c.charged-want)
		c.charged = want
	}
}

// maxHeldIDs bounds the ids of the text the stream's encoder holds back:
// its bytes are not known here, so each is counted as the most any byte
// can make (tokenizer.MaxIDsPerByte).
func (c *convo) maxHeldIDs() int { return tokenizer.MaxIDsPerByte * c.s.HeldBytes() }

// end makes the stream unusable, releasing its memory now.
func (c *convo) end(err error) {
	c.ended = err
	c.close("error")
}

// judgePrompt judges a user turn (msgs end with the user's message; on a
// stream that holds a conversation they continue it).
func (c *convo) judgePrompt(ctx context.Context, msgs []tokenizer.Message) (*guard.PromptVerdict, error) {
	ids, err := c.promptIDs(msgs)
	if err != nil {
		return nil, badRequest{err}
	}
	return c.judgePromptIDs(ctx, ids)
}

// nextTurn judges the next user turn on a stream that may be inside a
// response: the response's held-back end first (endHeld: its verdicts
// and final state), then the prompt. A prompt refused for what it is (it
// does not render, or it alone would overrun the stream) is refused
// before anything is judged; one refused after the response's end was
// judged still returns those verdicts with its error.
func (c *convo) nextTurn(ctx context.Context, msgs []tokenizer.Message) (tail []guard.TokenVerdict, ended *State, pv *guard.PromptVerdict, err error) {
	ids, err := c.promptIDs(msgs)
	if err != nil {
		return nil, nil, nil, badRequest{err}
	}
	if n, lim := c.s.Len()+c.s.Pending()+len(ids), c.srv.maxStreamTokens; n > lim {
		return nil, nil, nil, tooLong{n, lim}
	}
	if tail, ended, err = c.endHeld(ctx); err != nil {
		return nil, nil, nil, err
	}
	if pv, err = c.judgePromptIDs(ctx, ids); err == nil {
		c.lead = true // a refused prompt took nothing: the response goes on
	}
	return tail, ended, pv, err
}

// judgePromptIDs is judgePrompt for a rendered prompt.
func (c *convo) judgePromptIDs(ctx context.Context, ids []int) (*guard.PromptVerdict, error) {
	res, err := c.run(ctx, len(ids), len(ids)+c.maxHeldIDs()+headerSlack, func() error { return c.s.QueuePromptIDs(ids) })
	if err != nil {
		return nil, err
	}
	if res.Prompt == nil {
		return nil, errors.New("internal error: the prompt produced no verdict")
	}
	return res.Prompt, nil
}

// promptIDs lays msgs out as guard.Stream.QueuePrompt does (the one chat
// scaffold, tokenizer.RenderConversation), so that the length is known
// before anything is queued.
func (c *convo) promptIDs(msgs []tokenizer.Message) ([]int, error) {
	if len(msgs) == 0 {
		return nil, errors.New("empty prompt: no messages")
	}
	if last := msgs[len(msgs)-1]; last.Role != "user" && last.Role != "tool" {
		return nil, fmt.Errorf("the last message must be the user's turn (or tool results, which the chat template writes as one), got role %q", last.Role)
	}
	conv, err := guardhook.Tokenizer(c.srv.model).RenderConversation(msgs)
	if err != nil {
		return nil, err
	}
	return conv.Prompt(), nil
}

// judgeConversation judges msgs on a fresh stream as guard.Model.Moderate
// does: the last user turn's prompt verdict and, when an assistant turn
// follows, its content token by token. The stream is left inside the
// response, so that more of it can be appended.
func (c *convo) judgeConversation(ctx context.Context, msgs []tokenizer.Message) (Result, error) {
	if len(msgs) == 0 || msgs[len(msgs)-1].Role != "assistant" {
		pv, err := c.judgePrompt(ctx, msgs)
		c.lead = true
		return Result{Prompt: pv}, err
	}
	conv, err := guardhook.Tokenizer(c.srv.model).RenderConversation(msgs)
	if err != nil {
		return Result{}, badRequest{err}
	}
	n := len(conv.Prompt()) + len(conv.Judged())
	res, err := c.run(ctx, n, n+headerSlack, func() error { return c.queueWithResponse(conv) })
	if err == nil && res.Prompt == nil {
		err = errors.New("internal error: the prompt produced no verdict")
	}
	c.lead = leadAfter(msgs)
	return res, err
}

// queueWithResponse queues a conversation that ends with an assistant
// turn: the prompt, the response header and the response's ids, which
// stays open for more.
func (c *convo) queueWithResponse(conv *tokenizer.Conversation) error {
	if err := c.s.QueuePromptIDs(conv.Prompt()); err != nil {
		return err
	}
	if err := c.s.StartResponse(conv.Thinking); err != nil {
		return err
	}
	return c.s.QueueIDs(conv.Judged())
}

// appendText judges response text (any chunking); the tokens the encoder
// holds back come with a later call or flush, or with this one when flush
// is set (one operation: its verdicts and its charge are one).
func (c *convo) appendText(ctx context.Context, text string, flush bool) ([]guard.TokenVerdict, error) {
	// Text the stream's encoder holds back (a word that may still grow)
	// is tokens to come; once they cannot fit, more of it is refused
	// rather than held, however it is cut into appends.
	if c.ended == nil {
		held := c.s.HeldBytes() + len(text)
		if n, lim := c.s.Len()+c.s.Pending()+guardhook.Tokenizer(c.srv.model).MinIDs(held), c.srv.maxStreamTokens; n > lim {
			return nil, tooLong{n, lim}
		}
	}
	res, err := c.run(ctx, 0, tokenizer.MaxIDs(text)+c.maxHeldIDs()+headerSlack, func() error {
		if err := c.s.QueueText(text); err != nil || !flush {
			return err
		}
		return c.s.QueueFlushText()
	})
	if err != nil {
		return nil, c.endOnOverrun(err)
	}
	return res.Tokens, nil
}

// endThinking closes the think block: the reasoning's held text, "\n" and
// </think> are judged now; "\n\n" is held for the answer's first text.
func (c *convo) endThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	res, err := c.run(ctx, 1, c.maxHeldIDs()+2+headerSlack, c.s.QueueEndThinking)
	if err != nil {
		return nil, c.endOnOverrun(err)
	}
	return res.Tokens, nil
}

// toolTag feeds a tool call's tag with queue (the guard's
// QueueStartToolCall or QueueEndToolCall): the held text, then the tag's
// token (the answer opened first if it is not).
func (c *convo) toolTag(ctx context.Context, queue func() error) ([]guard.TokenVerdict, error) {
	res, err := c.run(ctx, 1, c.maxHeldIDs()+1+headerSlack, queue)
	if err != nil {
		return nil, c.endOnOverrun(err)
	}
	return res.Tokens, nil
}

// endOnOverrun ends the stream after the guard refused response text that
// would overrun the model's context. The guard took none of it, but the
// response cannot go on without it: text after it would be judged as if
// it had not been said.
func (c *convo) endOnOverrun(err error) error {
	// Text the stream would only have held back (a word still growing)
	// leaves no hole: refused with the stream intact.
	if !errors.Is(err, guard.ErrContextLength) || guardhook.HeldOverrun(err) || c.closed {
		return err
	}
	c.end(streamEnded{err})
	return c.ended
}

// appendIDs judges response token ids, after the text the encoder held
// back (QueueIDs flushes it first: ids end any word in progress), so an
// append of ids needs no flush of its own.
func (c *convo) appendIDs(ctx context.Context, ids []int) ([]guard.TokenVerdict, error) {
	res, err := c.run(ctx, len(ids), len(ids)+c.maxHeldIDs()+headerSlack, func() error { return c.s.QueueIDs(ids) })
	return res.Tokens, err
}

// flush judges the tokens the text encoder held back.
func (c *convo) flush(ctx context.Context) ([]guard.TokenVerdict, error) {
	res, err := c.run(ctx, 0, c.maxHeldIDs()+headerSlack, c.s.QueueFlushText)
	if err != nil {
		return nil, c.endOnOverrun(err)
	}
	return res.Tokens, nil
}

// endHeld judges the text the open response's encoder holds back, before
// an operation that ends the response (a new prompt, close): that text is
// the response's end, and its verdicts, a flag among them, belong in the
// operation's answer rather than to a turn nobody reads. It returns the
// verdicts and the response's final state, or nothing when no text is
// held.
func (c *convo) endHeld(ctx context.Context) ([]guard.TokenVerdict, *State, error) {
	if c.ended != nil || c.s.HeldBytes() == 0 {
		return nil, nil, nil
	}
	tvs, err := c.flush(ctx)
	if err != nil {
		return nil, nil, err
	}
	st := c.state()
	return tvs, &st, nil
}

// startResponse queues the assistant header; it is judged (not judged:
// scaffold) with the next append.
func (c *convo) startResponse(ctx context.Context, thinking bool) error {
	_, err := c.run(ctx, 0, headerSlack, func() error { return c.s.StartResponse(thinking) })
	return err
}

// State is a stream's moderation state.
type State struct {
	ID string `json:"id,omitempty"`
	// Status is "allowed", or "flagged" once the current response has
	// been flagged (the online debounce rule).
	Status string `json:"status"`
	// FlaggedIndex is the response token index that flagged it, -1 if none.
	FlaggedIndex int `json:"flagged_index"`
	// Position is the number of tokens fed to the stream so far.
	Position int `json:"position"`
	// Decision is the official final rule over the current response.
	Decision guard.Decision `json:"decision"`
}

func (c *convo) state() State {
	st := State{Status: "allowed", FlaggedIndex: -1, Position: c.s.Len(), Decision: c.s.Decision()}
	if i, ok := c.s.Flagged(); ok {
		st.Status, st.FlaggedIndex = "flagged", i
	}
	return st
}

// testObserve, when set by a test, sees every result a conversation gets.
var testObserve func(*Result)

// observe counts verdicts and audits the decisions in res.
func (c *convo) observe(res *Result) {
	if testObserve != nil {
		testObserve(res)
	}
	m := c.srv.metrics
	if p := res.Prompt; p != nil {
		m.verdict("prompt", p.RiskIndex, p.Risk, p.Category)
		c.flagged = false // a new turn
		c.srv.auditPrompt(c, p)
	}
	m.fed.Add(uint64(res.Fed))
	for i := range res.Tokens {
		t := &res.Tokens[i]
		if t.Index == 0 {
			c.flagged = false
		}
		m.judged.Add(1)
		m.verdict("response", t.RiskIndex, t.Risk, t.Category)
		if t.Flagged && !c.flagged {
			c.flagged = true
			c.srv.auditFlag(c, t)
		}
	}
}
