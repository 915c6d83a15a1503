package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamguard/streamguard/internal/extproc"
	"github.com/streamguard/streamguard/internal/proxy"
)

// ExtProcOptions configure Envoy's external processing service (serve
// --ext-proc-addr).
type ExtProcOptions struct {
	// ChunkWait bounds the wait for verdicts before a streamed body chunk
	// is answered in hold-back mode (0: extproc.DefaultChunkWait).
	ChunkWait time.Duration
}

// extProcRoute names ext_proc exchanges in the request metrics.
const extProcRoute = "ext_proc"

// ExtProc builds the ext_proc service: chat completions that an Envoy
// gateway relays are judged as the proxy judges them (each tenant's proxy
// settings, the scheduler, the audit log, the proxy metrics), and each
// exchange is authenticated, rate-limited and counted like a request to
// the HTTP routes (route "ext_proc").
func (srv *Server) ExtProc(opts ExtProcOptions) (*extproc.Service, error) {
	byTenant := map[*Tenant]*proxy.Tenant{}
	for _, t := range srv.tenants.all() {
		pt, err := srv.proxyTenant(t)
		if err != nil {
			return nil, err
		}
		byTenant[t] = pt
	}
	ext, err := proxy.NewExternal(proxy.Config{
		DefaultTenant: *byTenant[srv.tenants.all()[0]], Audit: srv.audit,
		Observe: func(o proxy.Outcome) { srv.metrics.proxyOutcome(o.Tenant, o.Event) },
	}, Moderator{srv})
	if err != nil {
		return nil, err
	}
	return extproc.New(extproc.Config{External: ext, Admit: extAdmitter{srv, byTenant}, ChunkWait: opts.ChunkWait, Log: srv.log})
}

// ServeExtProc serves svc over gRPC on ln until Serve's shutdown stops it
// (gracefully, within Serve's grace, before the streams are closed).
func (srv *Server) ServeExtProc(ln net.Listener, svc *extproc.Service) error {
	gs := newGRPCServer(srv.log, grpc.MaxRecvMsgSize(svc.MaxMessageBytes()))
	svc.Register(gs)
	if !srv.grpc.CompareAndSwap(nil, gs) {
		return fmt.Errorf("server: ext_proc is already served")
	}
	return gs.Serve(ln)
}

// newGRPCServer is a gRPC server whose handlers' panics end their own call
// with codes.Internal (and a log record with the stack), not the process:
// grpc-go does not recover them, and one would take down every exchange in
// flight and the HTTP server with it. (A panic on a goroutine a handler
// started is not covered.)
func newGRPCServer(log *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	recovered := func(method string, err *error) {
		if p := recover(); p != nil {
			log.Error("grpc: handler panic", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			*err = status.Errorf(codes.Internal, "streamguard: internal error serving %s", method)
		}
	}
	return grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer recovered(info.FullMethod, &err)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer recovered(info.FullMethod, &err)
			return h(s, ss)
		}))...)
}

// stopExtProc starts the graceful stop of the ext_proc server, if any; the
// channel is closed once it has stopped.
func (srv *Server) stopExtProc() <-chan struct{} {
	done := make(chan struct{})
	gs := srv.grpc.Load()
	if gs == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		gs.GracefulStop()
	}()
	return done
}

// extAdmitter admits ext_proc exchanges as wrap admits HTTP requests.
type extAdmitter struct {
	srv      *Server
	byTenant map[*Tenant]*proxy.Tenant
}

func (a extAdmitter) Admit(ctx context.Context, h http.Header) (extproc.Admission, *proxy.Answer) {
	srv := a.srv
	srv.metrics.accepted.Add(1)
	refuse := func(tenant string, c *capture) *proxy.Answer {
		srv.metrics.answered.Add(1)
		srv.metrics.request(tenant, extProcRoute, c.code)
		return &proxy.Answer{Status: c.code, Header: c.h, Body: c.body.Bytes()}
	}
	c := &capture{h: http.Header{}}
	t := srv.tenants.authenticate(apiKey(&http.Request{Header: h}))
	if t == nil {
		c.h.Set("WWW-Authenticate", `Bearer realm="streamguard"`)
		writeErr(c, http.StatusUnauthorized, "authentication_error", "invalid_api_key", "missing or unknown API key (Authorization: Bearer KEY, or x-api-key: KEY)")
		return extproc.Admission{}, refuse("-", c)
	}
	if !t.acquireConn() {
		srv.metrics.rejected("tenant_connections")
		setRetryAfter(c, srv.opts.RetryAfter)
		writeErr(c, http.StatusTooManyRequests, "rate_limit_error", "connection_limit",
			fmt.Sprintf("the tenant's connection limit (%d requests in progress or duplex connections) is reached", t.MaxConns))
		return extproc.Admission{}, refuse(t.Name, c)
	}
	if ok, wait := t.limiter.allow(time.Now()); !ok {
		t.releaseConn()
		srv.metrics.rejected("rate_limit")
		setRetryAfter(c, wait)
		writeErr(c, http.StatusTooManyRequests, "rate_limit_error", "rate_limit", "the tenant's request rate limit is exceeded")
		return extproc.Admission{}, refuse(t.Name, c)
	}
	return extproc.Admission{
		Ctx:    context.WithValue(ctx, tenantKey{}, t),
		Tenant: a.byTenant[t],
		Done: func(code int) {
			t.releaseConn()
			if code != 0 {
				srv.metrics.answered.Add(1)
			}
			srv.metrics.request(t.Name, extProcRoute, code)
		},
	}, nil
}
