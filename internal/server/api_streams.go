package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// promptInput is a user turn: messages (ending with the user's), or a
// prompt with an optional system message.
type promptInput struct {
	// Messages are read as the model's server reads them (chatmsg.Message):
	// exact keys, an assistant's tool calls and reasoning judged with it.
	Messages []json.RawMessage `json:"messages"`
	Prompt   string            `json:"prompt"`
	System   string            `json:"system"`
}

func (in *promptInput) messages() ([]tokenizer.Message, error) {
	switch {
	case len(in.Messages) > 0 && (in.Prompt != "" || in.System != ""):
		return nil, badRequest{errors.New(`give "messages" or "prompt", not both`)}
	case len(in.Messages) > 0:
		msgs := make([]tokenizer.Message, len(in.Messages))
		for i, raw := range in.Messages {
			var skipped chatmsg.Skipped
			m, err := chatmsg.Message(raw, &skipped)
			switch {
			case err != nil:
				return nil, badRequest{fmt.Errorf("messages[%d]: %w", i, err)}
			case m.Role == chatmsg.ToolRole:
				return nil, badRequest{fmt.Errorf("messages[%d]: a tool or function result: want system, developer, user or assistant (POST /v1/moderations judges tool results)", i)}
			case len(skipped) > 0:
				// A stream judges all that its model reads: a part the
				// guard cannot read is refused, not passed over.
				return nil, badRequest{fmt.Errorf("messages[%d]: content parts without text (%s): a stream judges text only", i, strings.Join(skipped, ", "))}
			}
			msgs[i] = m
		}
		return msgs, nil
	case in.Prompt != "":
		var msgs []tokenizer.Message
		if in.System != "" {
			msgs = append(msgs, tokenizer.Message{Role: "system", Content: in.System})
		}
		return append(msgs, tokenizer.Message{Role: "user", Content: in.Prompt}), nil
	}
	return nil, badRequest{errors.New(`no prompt: give "messages" or "prompt"`)}
}

// field is the request field that carried the prompt.
func (in *promptInput) field() string {
	if len(in.Messages) > 0 {
		return "messages"
	}
	return "prompt"
}

// appendInput is response text or token ids; Flush also judges what the
// text encoder held back (the response is complete).
type appendInput struct {
	Text  *string `json:"text"`
	IDs   []int   `json:"ids"`
	Flush bool    `json:"flush"`
}

// streamResponse is the answer of every stream operation.
type streamResponse struct {
	ID     string               `json:"id"`
	Prompt *guard.PromptVerdict `json:"prompt,omitempty"`
	// Tokens are the verdicts on the response tokens judged by this
	// operation, in order (the assistant header is not judged and not
	// listed).
	Tokens []guard.TokenVerdict `json:"tokens"`
	// Ended is the final state of the response that a prompt or close
	// ended, when the response's end was held back (text that later text
	// could still have changed) and this operation judged it: its
	// verdicts are in Tokens.
	Ended *State `json:"ended,omitempty"`
	State State  `json:"state"`
}

// tokensOrEmpty makes "tokens" a JSON array even when there are none.
func tokensOrEmpty(tvs []guard.TokenVerdict) []guard.TokenVerdict {
	if tvs == nil {
		return []guard.TokenVerdict{}
	}
	return tvs
}

func (srv *Server) createStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var in createInput
	if err := decodeJSON(r, &in); err != nil {
		srv.writeError(w, err)
		return
	}
	id := requestStreamID(r) // the client's X-Streamguard-Stream, or random (affinity.go)
	c, resp, err := srv.openStream(r.Context(), t, id, &in)
	if err != nil {
		srv.writeError(w, err)
		return
	}
	srv.sessions.add(&session{id: id, c: c})
	writeJSON(w, http.StatusCreated, resp)
}

// withSession runs op on the tenant's stream named in the path, one
// operation at a time per stream.
func (srv *Server) withSession(w http.ResponseWriter, r *http.Request, t *Tenant, op func(s *session) (streamResponse, error)) {
	id := r.PathValue("id")
	s := srv.sessions.get(t, id)
	if s == nil {
		writeStreamLost(w, id)
		return
	}
	resp, lost, err := func() (streamResponse, bool, error) {
		// The answer is written after the lock is released: a client
		// slow to read it holds no one else's operation on the stream.
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lastUse.Store(time.Now().UnixNano())
		if s.c.closed {
			return streamResponse{}, true, nil
		}
		resp, err := op(s)
		s.lastUse.Store(time.Now().UnixNano())
		if s.c.closed {
			srv.sessions.remove(t, id)
		}
		return resp, false, err
	}()
	if lost {
		writeStreamLost(w, id)
		return
	}
	if err != nil {
		// Verdicts the operation got before its error (the end of a
		// response a refused prompt ended) go with the error.
		srv.writeErrorWith(w, err, resp.Tokens, resp.Ended)
		return
	}
	resp.ID = id
	resp.State.ID = id
	if resp.Tokens == nil {
		resp.Tokens = []guard.TokenVerdict{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (srv *Server) appendStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var in appendInput
	if err := decodeJSON(r, &in); err != nil {
		srv.writeError(w, err)
		return
	}
	srv.withSession(w, r, t, func(s *session) (streamResponse, error) {
		tvs, err := s.c.appendInput(r.Context(), &in)
		return streamResponse{Tokens: tvs, State: s.c.state()}, err
	})
}

// appendInput runs an append request: text or ids, then an optional flush.
func (c *convo) appendInput(ctx context.Context, in *appendInput) ([]guard.TokenVerdict, error) {
	var tvs []guard.TokenVerdict
	var err error
	switch {
	case in.Text != nil && in.IDs != nil:
		return nil, badRequest{errors.New(`give "text" or "ids", not both`)}
	case in.Text != nil:
		c.srv.auditText(c, *in.Text)
		text := c.leadText(*in.Text)
		tvs, err = c.appendText(ctx, text, in.Flush)
		if err == nil {
			c.tookText(text)
		}
		err = lengthParam(err, "text")
	case in.IDs != nil:
		tvs, err = c.appendIDs(ctx, in.IDs) // flushes what was held: Flush adds nothing
		if err == nil {
			c.lead = false // ids are taken as given
		}
		err = lengthParam(err, "ids")
	case in.Flush:
		tvs, err = c.flush(ctx)
	default:
		return nil, badRequest{errors.New(`nothing to append: give "text" or "ids" (or "flush": true)`)}
	}
	if err != nil {
		return nil, err
	}
	return tokensOrEmpty(tvs), nil
}

func (srv *Server) flushStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	srv.withSession(w, r, t, func(s *session) (streamResponse, error) {
		tvs, err := s.c.flush(r.Context())
		return streamResponse{Tokens: tokensOrEmpty(tvs), State: s.c.state()}, err
	})
}

// promptStream judges the next user turn of a multi-turn conversation;
// an open response is ended first.
func (srv *Server) promptStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var in promptInput
	if err := decodeJSON(r, &in); err != nil {
		srv.writeError(w, err)
		return
	}
	msgs, err := in.messages()
	if err != nil {
		srv.writeError(w, err)
		return
	}
	srv.withSession(w, r, t, func(s *session) (streamResponse, error) {
		srv.auditContent(s.c, "prompt", msgs)
		tail, ended, pv, err := s.c.nextTurn(r.Context(), msgs)
		return streamResponse{Prompt: pv, Tokens: tokensOrEmpty(tail), Ended: ended, State: s.c.state()}, lengthParam(err, in.field())
	})
}

func (srv *Server) getStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	srv.withSession(w, r, t, func(s *session) (streamResponse, error) {
		return streamResponse{Prompt: s.c.s.LastPrompt(), State: s.c.state()}, nil
	})
}

// closeStream closes the stream and returns its final state.
func (srv *Server) closeStream(w http.ResponseWriter, r *http.Request, t *Tenant) {
	srv.withSession(w, r, t, func(s *session) (streamResponse, error) {
		tail, _, err := s.c.endHeld(r.Context())
		st := s.c.state()
		s.c.close("closed")
		if err != nil {
			// Closed all the same: the error says the response's end
			// went unjudged, and that the stream is gone.
			err = streamEnded{err}
		}
		return streamResponse{Prompt: s.c.s.LastPrompt(), Tokens: tokensOrEmpty(tail), State: st}, err
	})
}
