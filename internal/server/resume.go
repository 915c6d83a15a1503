package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/jsonkeys"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Resuming a stream. A stream lives in the memory of one replica; when
// that replica goes away (or the stream expires) its client gets 404
// stream_lost. POST /v1/streams with "resume": true (and the duplex open
// operation) opens a stream, on any replica, in the state the lost one had
// reached: the client sends what it had sent the lost stream — the body
// that opened it, the response appended after it, and each later prompt
// with the response appended after that — and the server queues it exactly
// as those requests had. The new stream then holds the same token ids at
// the same positions, its text encoder holds back the same bytes, and its
// policy state (the debounce run, the flag, the decision) is the one those
// tokens produce. Verdicts depend neither on batching nor on chunking, so
// every verdict from then on equals the uninterrupted stream's, bit for
// bit.

// createInput is the body of POST /v1/streams and of the duplex open
// operation: a prompt, or with Resume the requests a lost stream had
// taken.
type createInput struct {
	promptInput
	resumeInput
}

// resumeInput holds what a lost stream was sent after its opening prompt.
type resumeInput struct {
	// Resume says the body replays a lost stream.
	Resume bool `json:"resume"`
	// Response is what was appended after the opening prompt.
	Response responseParts `json:"response"`
	// Turns are the later prompts (POST .../prompt), each with the
	// response appended after it.
	Turns []resumeTurn `json:"turns"`
	// TokensFrom asks for the verdicts of the current response's tokens
	// from this index on (none when absent).
	TokensFrom *int `json:"tokens_from"`
}

// any reports whether a resume field is set.
func (in *resumeInput) any() bool {
	return in.Resume || in.Response != nil || in.Turns != nil || in.TokensFrom != nil
}

// resumeTurn is one later user turn and the response appended after it.
type resumeTurn struct {
	promptInput
	Response responseParts `json:"response"`
}

// responseParts is what was appended to one response, in order: one
// append body ({"text": ...} or {"ids": [...]}, optionally with "flush":
// true) or an array of them. Text appended in several requests is one
// text: only a flush, or ids between two texts, splits it.
type responseParts []appendInput

func (p *responseParts) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*p = nil
		return nil
	case len(b) > 0 && b[0] == '[':
		parts := []appendInput{}
		if err := jsonkeys.Check(b, &parts); err != nil { // exact keys, as decodeJSON
			return err
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		*p = parts
		return nil
	}
	var one appendInput
	if err := jsonkeys.Check(b, &one); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	*p = responseParts{one}
	return nil
}

// replayStep is one request of a lost stream, as a resume replays it.
type replayStep struct {
	field string              // the request field it comes from, for errors
	msgs  []tokenizer.Message // a prompt (the first step opens the stream)
	part  *appendInput        // or what one append request sent
}

// plan checks a create body and returns the requests it stands for: the
// opening prompt, then, when it resumes a stream, every append and later
// prompt in order.
func (in *createInput) plan() ([]replayStep, error) {
	if !in.Resume && in.resumeInput.any() {
		return nil, badRequest{errors.New(`"response", "turns" and "tokens_from" resume a lost stream: set "resume": true`)}
	}
	msgs, err := in.promptInput.messages()
	if err != nil {
		return nil, err
	}
	steps := []replayStep{{field: in.promptInput.field(), msgs: msgs}}
	if !in.Resume {
		return steps, nil
	}
	if in.TokensFrom != nil && *in.TokensFrom < 0 {
		return nil, badRequest{fmt.Errorf(`"tokens_from" %d: want a token index, 0 or more`, *in.TokensFrom)}
	}
	if steps, err = in.Response.steps(steps, "response"); err != nil {
		return nil, err
	}
	for i := range in.Turns {
		turn := &in.Turns[i]
		field := fmt.Sprintf("turns[%d]", i)
		msgs, err := turn.promptInput.messages()
		if err != nil {
			return nil, badRequest{fmt.Errorf("%s: %w", field, err)}
		}
		if last := msgs[len(msgs)-1]; last.Role != "user" {
			return nil, badRequest{fmt.Errorf("%s: the last message must be the user's turn, got role %q (a later prompt is a user turn; put the response in %s.response)", field, last.Role, field)}
		}
		steps = append(steps, replayStep{field: field + "." + turn.promptInput.field(), msgs: msgs})
		if steps, err = turn.Response.steps(steps, field+".response"); err != nil {
			return nil, err
		}
	}
	return steps, nil
}

// steps appends the parts to steps, checking each as an append request is
// checked.
func (p responseParts) steps(steps []replayStep, field string) ([]replayStep, error) {
	for j := range p {
		part := &p[j]
		where := field
		if len(p) > 1 {
			where = fmt.Sprintf("%s[%d]", field, j)
		}
		switch {
		case part.Text != nil && part.IDs != nil:
			return nil, badRequest{fmt.Errorf(`%s: give "text" or "ids", not both (send a list of parts for a response appended as both)`, where)}
		case part.Text == nil && part.IDs == nil && !part.Flush:
			return nil, badRequest{fmt.Errorf(`%s: nothing appended: give "text" or "ids" (or "flush": true)`, where)}
		}
		steps = append(steps, replayStep{field: field, part: part})
	}
	return steps, nil
}

// openStream opens the stream of a create request (POST /v1/streams, the
// duplex open) under id: it judges the prompt (and the response's first
// words when messages end with them), or with resume replays a lost
// stream. On error nothing stays open.
func (srv *Server) openStream(ctx context.Context, t *Tenant, id string, in *createInput) (*convo, streamResponse, error) {
	steps, err := in.plan()
	if err != nil {
		return nil, streamResponse{}, err
	}
	c, err := srv.openConvo(t, id, srv.opts.StreamReserveTokens)
	if err != nil {
		return nil, streamResponse{}, err
	}
	var res Result
	var ended *State
	tokens := []guard.TokenVerdict{}
	if in.Resume {
		var r resumed
		if r, err = c.resume(ctx, steps, in.TokensFrom); err == nil {
			res.Prompt, tokens, ended = r.prompt, r.tokens, r.ended
		}
	} else {
		srv.auditContent(c, "prompt", steps[0].msgs)
		res, err = c.judgeConversation(ctx, steps[0].msgs)
		err = lengthParam(err, steps[0].field)
		tokens = tokensOrEmpty(res.Tokens)
	}
	if err != nil {
		c.close("error")
		return nil, streamResponse{}, err
	}
	st := c.state()
	st.ID = id
	return c, streamResponse{ID: id, Prompt: res.Prompt, Tokens: tokens, Ended: ended, State: st}, nil
}

// responseTokens are the verdicts of the response after res's last prompt
// from index from on; none without from.
func responseTokens(res Result, from *int) []guard.TokenVerdict {
	out := []guard.TokenVerdict{}
	if from == nil || res.Prompt == nil {
		return out
	}
	for _, tv := range res.Tokens {
		if tv.Position > res.Prompt.Position && tv.Index >= *from {
			out = append(out, tv)
		}
	}
	return out
}

// resumed is what a replay gives its answer.
type resumed struct {
	prompt *guard.PromptVerdict // the last user turn's verdict
	// tokens are the current response's verdicts that tokens_from asks
	// for (none when the replay ends with a later prompt: its response
	// has not begun).
	tokens []guard.TokenVerdict
	// ended is the final state of the response a replay's last prompt
	// ended when that response held text back, as that prompt's own
	// answer had it: the held text's verdicts (a flag among them) were
	// that answer's, which the client may never have read.
	ended *State
}

// resume queues steps on the fresh stream c, each as the request it stands
// for queued it, and judges them. The whole replay is counted before
// anything is charged or fed: past the stream's length limit it is
// refused (400 context_length_exceeded, naming the field that went past
// it), and the KV budget is charged all of it plus the response reserve,
// as a new stream is charged its prompt plus the reserve (429 kv_budget
// when that does not fit). Consecutive text parts are queued as one text
// (chunking changes no token), so that a replay of many small parts costs
// what one append of their text costs. A last later prompt is judged
// apart, after the text before it, as its request was: its answer carried
// the response's end.
func (c *convo) resume(ctx context.Context, steps []replayStep, from *int) (resumed, error) {
	if c.s.Len() != 0 || c.s.Pending() != 0 || c.charged != 0 {
		return resumed{}, errors.New("internal error: resume needs a fresh stream")
	}
	fail := func(field string, err error) error {
		switch {
		case errors.Is(err, guard.ErrContextLength):
			return paramError{field, err}
		case errors.Is(err, guard.ErrClosed):
			return ErrStreamClosed
		default:
			return badRequest{fmt.Errorf("%s: %w", field, err)}
		}
	}
	var text strings.Builder
	textField := ""
	queueText := func() error {
		if textField == "" {
			return nil
		}
		t := c.leadText(text.String()) // as appendInput takes it
		err := c.s.QueueText(t)
		text.Reset()
		if err != nil {
			return fail(textField, err)
		}
		textField = ""
		c.tookText(t)
		return nil
	}
	body, last := steps, steps[len(steps)-1]
	if len(steps) < 2 || last.msgs == nil {
		last = replayStep{}
	} else {
		body = steps[:len(steps)-1]
	}
	for i, st := range body {
		var err error
		switch {
		case st.msgs != nil:
			if err := queueText(); err != nil {
				return resumed{}, err
			}
			c.srv.auditContent(c, "prompt", st.msgs)
			err = c.queuePrompt(st.msgs, i == 0)
			c.lead = leadAfter(st.msgs)
		case st.part.Text != nil:
			c.srv.auditText(c, *st.part.Text)
			text.WriteString(*st.part.Text)
			textField = st.field
		case st.part.IDs != nil:
			if err := queueText(); err != nil {
				return resumed{}, err
			}
			err = c.s.QueueIDs(st.part.IDs)
			c.lead = false
		}
		if err == nil && st.part != nil && st.part.Flush {
			if err = queueText(); err != nil {
				return resumed{}, err
			}
			err = c.s.QueueFlushText()
		}
		if err != nil {
			return resumed{}, fail(st.field, err)
		}
	}
	if err := queueText(); err != nil {
		return resumed{}, err
	}
	var lastIDs []int
	held := false
	if last.msgs != nil {
		c.srv.auditContent(c, "prompt", last.msgs)
		var err error
		if lastIDs, err = c.promptIDs(last.msgs); err != nil {
			return resumed{}, fail(last.field, err)
		}
		// The prompt's request ended the response first (endHeld).
		if held = c.s.HeldBytes() > 0; held {
			if err := c.s.QueueFlushText(); err != nil {
				return resumed{}, fail(last.field, err)
			}
		}
	}
	// The scaffold a later prompt puts before its turn: "<|im_end|>\n"
	// after a response, "\n" after a prompt (a user turn last).
	closing := 2
	if b := body[len(body)-1]; b.msgs != nil && b.msgs[len(b.msgs)-1].Role != "assistant" {
		closing = 1
	}
	lim := c.srv.maxStreamTokens
	n := c.s.Pending() + len(lastIDs)
	if last.msgs != nil && n+closing > lim { // the queues checked the rest
		return resumed{}, paramError{last.field, tooLong{n + closing, lim}}
	}
	c.floor = n + c.reserve
	if err := c.charge(ctx, min(c.floor, lim)); err != nil { // as run charges
		return resumed{}, err
	}
	res, err := c.submit(ctx)
	if err != nil {
		return resumed{}, err
	}
	out := resumed{prompt: res.Prompt, tokens: []guard.TokenVerdict{}}
	if last.msgs == nil {
		out.tokens = responseTokens(res, from)
	} else {
		if held {
			st := c.state()
			out.ended = &st
		}
		if err := c.s.QueuePromptIDs(lastIDs); err != nil {
			return resumed{}, fail(last.field, err)
		}
		c.lead = true
		next, err := c.submit(ctx)
		if err != nil {
			return resumed{}, err
		}
		out.prompt = next.Prompt
	}
	c.srv.metrics.resumed.Add(1)
	c.srv.auditResume(c, len(steps), n)
	return out, nil
}

// queuePrompt queues a user turn as the request it stands for did: the
// opening one as judgeConversation lays it out (with the response's first
// words when the messages end with them), a later one as judgePrompt does.
func (c *convo) queuePrompt(msgs []tokenizer.Message, opening bool) error {
	if opening && msgs[len(msgs)-1].Role == "assistant" {
		conv, err := guardhook.Tokenizer(c.srv.model).RenderConversation(msgs)
		if err != nil {
			return err
		}
		return c.queueWithResponse(conv)
	}
	ids, err := c.promptIDs(msgs)
	if err != nil {
		return err
	}
	return c.s.QueuePromptIDs(ids)
}
