package proxy

import (
	"context"
	"fmt"

	"github.com/streamguard/streamguard/guard"
)

// Mode is how a streamed response reaches the client.
type Mode int

const (
	// HoldBack releases text only after its tokens and a look-ahead were
	// judged: a flagged token never reaches the client.
	HoldBack Mode = iota
	// PassThrough forwards text at once and cuts the stream as soon as it
	// is flagged.
	PassThrough
)

func (m Mode) String() string {
	switch m {
	case HoldBack:
		return "hold-back"
	case PassThrough:
		return "pass-through"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "hold-back" or "pass-through".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "hold-back":
		return HoldBack, nil
	case "pass-through":
		return PassThrough, nil
	}
	return 0, fmt.Errorf("proxy mode %q: want hold-back or pass-through", s)
}

// Refusal forms for a flagged prompt (Tenant.Refusal).
const (
	// RefusalError answers HTTP 400 with an OpenAI error whose code is
	// "content_filter".
	RefusalError = "error"
	// RefusalCompletion answers a normal completion whose message is the
	// tenant's RefusalMessage, with finish_reason "content_filter".
	RefusalCompletion = "completion"
)

// DefaultRefusalMessage is the refusal completion's text when the tenant
// sets none.
const DefaultRefusalMessage = "I can't help with that."

// Tenant is the per-tenant proxy configuration. The server authenticates
// the request, then puts the tenant in the request context with WithTenant;
// without one the handler uses Config.DefaultTenant.
type Tenant struct {
	Name   string
	Policy guard.Policy
	Mode   Mode // HoldBack (the zero value) or PassThrough
	// Lookahead is the hold-back look-ahead in tokens; 0 means the
	// policy's debounce length (default 2). Any value of at least
	// debounce-1 keeps every token of the flagging run from the client.
	Lookahead int
	// FailOpen decides what happens when the guard is overloaded or
	// fails: forward unjudged (true, marked with the X-Streamguard-Unjudged
	// header and in the audit log) or answer 503 (false). Input longer
	// than the guard's stream is not a guard failure: a prompt that does
	// not fit is a 400 context_length_exceeded, a response that outgrows
	// the stream is cut with finish_reason "length", fail-open or not.
	FailOpen bool
	// TrimLongPrompt: a conversation that does not fit the guard's stream
	// is judged as its system turn and last user turn alone instead of
	// being refused with 400 context_length_exceeded. The earlier turns
	// then reach the upstream unjudged; off by default.
	TrimLongPrompt bool
	// UpstreamKey, when set, replaces the caller's Authorization header
	// upstream ("Bearer " + UpstreamKey).
	UpstreamKey string
	// ForwardAuthorization passes the caller's Authorization and X-Api-Key
	// headers upstream as they are, where streamguard reads no key of its
	// own (a server without tenants): the caller's OpenAI key then reaches
	// OpenAI, and only base_url changes for a client. X-Upstream-
	// Authorization and UpstreamKey still take precedence.
	ForwardAuthorization bool
	// Refusal is RefusalError ("" means it) or RefusalCompletion.
	Refusal string
	// RefusalMessage is the refusal completion's text; "" means
	// DefaultRefusalMessage.
	RefusalMessage string
}

func (t *Tenant) check() error {
	switch t.Refusal {
	case "", RefusalError, RefusalCompletion:
	default:
		return fmt.Errorf("tenant %q: refusal %q: want %q or %q", t.Name, t.Refusal, RefusalError, RefusalCompletion)
	}
	if t.Mode != HoldBack && t.Mode != PassThrough {
		return fmt.Errorf("tenant %q: unknown mode %d", t.Name, int(t.Mode))
	}
	if t.Lookahead < 0 {
		return fmt.Errorf("tenant %q: lookahead %d must not be negative (0 means the debounce length)", t.Name, t.Lookahead)
	}
	if t.Policy.Debounce < 0 {
		return fmt.Errorf("tenant %q: debounce %d must not be negative", t.Name, t.Policy.Debounce)
	}
	return nil
}

func (t *Tenant) lookahead() int {
	switch {
	case t.Lookahead > 0:
		return t.Lookahead
	case t.Policy.Debounce > 0:
		return t.Policy.Debounce
	}
	return guard.DefaultDebounce
}

func (t *Tenant) refusalMessage() string {
	if t.RefusalMessage != "" {
		return t.RefusalMessage
	}
	return DefaultRefusalMessage
}

type tenantKey struct{}

// WithTenant returns ctx carrying t, the tenant the handler serves a
// request for.
func WithTenant(ctx context.Context, t *Tenant) context.Context {
	return context.WithValue(ctx, tenantKey{}, t)
}

func tenantFrom(ctx context.Context, def *Tenant) *Tenant {
	if t, ok := ctx.Value(tenantKey{}).(*Tenant); ok && t != nil {
		return t
	}
	return def
}
