package proxy

import (
	"context"
	"errors"

	"github.com/streamguard/streamguard/guard"
)

// Moderator opens moderated streams. A server's batching scheduler
// implements it; Direct is a simple implementation (one forward per call).
type Moderator interface {
	// Open starts a stream with the given policy. When the guard is at
	// capacity (KV-cache budget, tenant stream limit) the error wraps
	// ErrOverloaded.
	Open(ctx context.Context, policy guard.Policy) (Stream, error)
}

// Stream is one conversation being moderated. Calls on one Stream are made
// from one goroutine at a time.
type Stream interface {
	JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error)
	// StartResponse opens the assistant turn; thinking=true leaves the
	// <think> block open so that reasoning text is judged (see
	// guard.Stream.StartResponse).
	StartResponse(ctx context.Context, thinking bool) error
	AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error)
	// EndThinking closes the think block StartResponse(true) opened
	// (guard.Stream.EndThinking): text never can.
	EndThinking(ctx context.Context) ([]guard.TokenVerdict, error)
	// StartToolCall and EndToolCall feed a tool call's tags as the
	// model's tokens for them (guard.Stream.StartToolCall): text never
	// can.
	StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error)
	EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error)
	FlushText(ctx context.Context) ([]guard.TokenVerdict, error)
	// Flagged reports the online flag (guard.Stream.Flagged).
	Flagged() (index int, ok bool)
	Close()
}

// ErrOverloaded is wrapped by Moderator errors that mean "at capacity, try
// later"; the tenant's FailOpen setting decides what the proxy does then.
var ErrOverloaded = errors.New("proxy: guard overloaded")

// ErrContextLength may be wrapped by Stream errors that mean "the input
// would take the stream past its room" (the model's context or the
// server's stream limit), like guard.ErrContextLength, which the proxy
// recognises too. Such input is the client's to shorten: the proxy never
// forwards it unjudged, whatever the tenant's FailOpen.
var ErrContextLength = errors.New("proxy: context length exceeded")

func isContextLength(err error) bool {
	return errors.Is(err, guard.ErrContextLength) || errors.Is(err, ErrContextLength)
}

// Direct moderates with m, one forward per call and no admission limit: for
// tests and tools. A server uses its scheduler instead.
func Direct(m *guard.Model) Moderator { return direct{m} }

type direct struct{ m *guard.Model }

func (d direct) Open(ctx context.Context, policy guard.Policy) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := d.m.NewStream()
	if err := s.SetPolicy(policy); err != nil {
		s.Close()
		return nil, err
	}
	return directStream{s}, nil
}

type directStream struct{ s *guard.Stream }

func (d directStream) JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.JudgePrompt(ctx, msgs)
}

func (d directStream) StartResponse(ctx context.Context, thinking bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.s.StartResponse(thinking)
}

func (d directStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.AppendText(ctx, text)
}

func (d directStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.StartToolCall(ctx)
}

func (d directStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.EndToolCall(ctx)
}

func (d directStream) EndThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.EndThinking(ctx)
}

func (d directStream) FlushText(ctx context.Context) ([]guard.TokenVerdict, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.s.FlushText(ctx)
}

func (d directStream) Flagged() (int, bool) { return d.s.Flagged() }
func (d directStream) Close()               { d.s.Close() }
