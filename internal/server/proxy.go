package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/proxy"
)

// ProxyOptions configure the chat-completions proxy (serve --upstream).
type ProxyOptions struct {
	// Upstream is the OpenAI-compatible base URL.
	Upstream string
	// Client calls the upstream; nil means the proxy's default.
	Client *http.Client
	// HeaderTimeout and IdleTimeout bound the wait for the upstream's
	// response headers and for each next part of its body (0: the
	// proxy's defaults); ForwardCookies passes cookies both ways.
	HeaderTimeout, IdleTimeout time.Duration
	ForwardCookies             bool
}

// MountProxy serves POST /v1/chat/completions and POST /v1/responses (the
// Responses API): the request is moderated
// by the scheduler as it is relayed to the upstream (internal/proxy),
// behind the server's authentication and rate limits, with each tenant's
// proxy settings.
func (srv *Server) MountProxy(po ProxyOptions) error {
	byTenant := map[*Tenant]*proxy.Tenant{}
	for _, t := range srv.tenants.all() {
		pt, err := srv.proxyTenant(t)
		if err != nil {
			return err
		}
		byTenant[t] = pt
	}
	def := *byTenant[srv.tenants.all()[0]]
	cfg := proxy.Config{
		Upstream: po.Upstream, Client: po.Client, Audit: srv.audit, DefaultTenant: def,
		HeaderTimeout: po.HeaderTimeout, IdleTimeout: po.IdleTimeout, ForwardCookies: po.ForwardCookies,
		// A client that stops reading an answer is let go as one that
		// stops writing a body is.
		WriteIdleTimeout: srv.opts.BodyIdleTimeout,
		Observe:          func(o proxy.Outcome) { srv.metrics.proxyOutcome(o.Tenant, o.Event) },
	}
	for _, route := range []struct {
		pattern, name string
		handler       func(proxy.Config, proxy.Moderator) (http.Handler, error)
	}{
		{"POST /v1/chat/completions", "chat.completions", proxy.NewHandler},
		{"POST /v1/responses", "responses", proxy.NewResponsesHandler},
	} {
		h, err := route.handler(cfg, Moderator{srv})
		if err != nil {
			return err
		}
		srv.mux.Handle(route.pattern, srv.wrap(route.name, mounted, func(w http.ResponseWriter, r *http.Request, t *Tenant) {
			ctx := context.WithValue(r.Context(), tenantKey{}, t)
			h.ServeHTTP(w, r.WithContext(proxy.WithTenant(ctx, byTenant[t])))
		}))
	}
	return nil
}

// proxyTenant is t's proxy configuration. A server without tenants reads
// no key of its own, so the caller's Authorization is its upstream key and
// goes upstream as it is.
func (srv *Server) proxyTenant(t *Tenant) (*proxy.Tenant, error) {
	pt := &proxy.Tenant{Name: t.Name, Policy: t.Policy, Lookahead: t.Proxy.Lookahead, FailOpen: t.Proxy.FailOpen,
		UpstreamKey: t.Proxy.UpstreamKey, Refusal: t.Proxy.Refusal, RefusalMessage: t.Proxy.RefusalMessage,
		TrimLongPrompt: t.Proxy.TrimLongPrompt, ForwardAuthorization: srv.tenants.open != nil}
	if t.Proxy.Mode != "" {
		m, err := proxy.ParseMode(t.Proxy.Mode)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", t.Name, err)
		}
		pt.Mode = m
	}
	return pt, nil
}

type tenantKey struct{}

// Moderator is the scheduler behind the proxy.Moderator interface: each
// stream the proxy opens is a conversation of the request's tenant,
// counted against its stream limit and the KV budget, and judged in the
// shared batches.
type Moderator struct{ srv *Server }

// Moderator returns the server's proxy.Moderator.
func (srv *Server) Moderator() Moderator { return Moderator{srv} }

// Open starts a stream for the tenant in ctx (the server's default tenant
// when there is none) with the given policy.
func (pm Moderator) Open(ctx context.Context, policy guard.Policy) (proxy.Stream, error) {
	srv := pm.srv
	t, _ := ctx.Value(tenantKey{}).(*Tenant)
	if t == nil {
		t = srv.tenants.all()[0]
	}
	if srv.isDraining() {
		return nil, overloaded(ErrShuttingDown)
	}
	c, err := srv.openConvo(t, "chat-"+newStreamID(), srv.opts.StreamReserveTokens)
	if err != nil {
		return nil, overloaded(err)
	}
	if err := c.s.SetPolicy(policy); err != nil {
		c.close("error")
		return nil, err
	}
	return &proxyStream{c}, nil
}

// overloaded marks capacity errors as proxy.ErrOverloaded.
func overloaded(err error) error {
	if errors.Is(err, ErrBudget) || errors.Is(err, ErrTooManyStreams) || errors.Is(err, ErrShuttingDown) {
		return fmt.Errorf("%w: %w", proxy.ErrOverloaded, err)
	}
	return err
}

type proxyStream struct{ c *convo }

func (p *proxyStream) JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error) {
	pv, err := p.c.judgePrompt(ctx, guardhook.ChatMessages(msgs))
	return pv, overloaded(err)
}

func (p *proxyStream) StartResponse(ctx context.Context, thinking bool) error {
	return overloaded(p.c.startResponse(ctx, thinking))
}

func (p *proxyStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	tvs, err := p.c.appendText(ctx, text, false)
	return tvs, overloaded(err)
}

func (p *proxyStream) EndThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	tvs, err := p.c.endThinking(ctx)
	return tvs, overloaded(err)
}

func (p *proxyStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	tvs, err := p.c.toolTag(ctx, p.c.s.QueueStartToolCall)
	return tvs, overloaded(err)
}

func (p *proxyStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	tvs, err := p.c.toolTag(ctx, p.c.s.QueueEndToolCall)
	return tvs, overloaded(err)
}

func (p *proxyStream) FlushText(ctx context.Context) ([]guard.TokenVerdict, error) {
	tvs, err := p.c.flush(ctx)
	return tvs, overloaded(err)
}

func (p *proxyStream) Flagged() (int, bool) { return p.c.s.Flagged() }

func (p *proxyStream) Close() {
	if !p.c.closed {
		p.c.close("closed")
	}
}
