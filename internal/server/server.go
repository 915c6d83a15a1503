package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/safecache"
)

// Options configure a Server. Zero values mean the defaults in brackets.
type Options struct {
	Model *guard.Model
	// ModelName is reported in responses [the model folder's name is up to
	// the caller; "qwen3guard-stream"].
	ModelName string
	// Config lists the tenants; nil serves everyone as tenant "default"
	// without authentication.
	Config *Config
	// KVBudgetBytes bounds the KV-cache memory of all streams [0: none].
	KVBudgetBytes int64
	// MaxStreamTokens bounds one stream's length [the model's
	// max_position_embeddings]; it cannot exceed it.
	MaxStreamTokens int
	// StreamReserveTokens is the room beyond its first prompt that a
	// stream (a session, a duplex connection, a proxied completion) is
	// charged from the start [256]: admission then refuses new streams
	// rather than letting open ones run into a full budget mid-response.
	// Growth beyond it is charged as it comes and may be refused (429).
	StreamReserveTokens int
	// KVBudgetWait is how long a request whose stream needs more KV-cache
	// memory than the budget has free waits for other streams to release
	// some, before its 429 [10s; negative: no wait]. Waiting requests are
	// served in arrival order, those of streams already open first, so a
	// full budget delays new streams instead of leaving them to win a
	// race of retries.
	KVBudgetWait time.Duration
	// MaxBodyBytes bounds a request body, and one duplex line [1 MiB].
	MaxBodyBytes int64
	// IdleTimeout closes streams unused for this long [5m].
	IdleTimeout time.Duration
	// RequestTimeout bounds the judging of one request or duplex
	// operation [30s]; a stream whose operation timed out is closed. A
	// proxied completion's answer is bounded by the proxy's upstream
	// timeouts instead (its request body still by RequestTimeout).
	RequestTimeout time.Duration
	// ReadHeaderTimeout bounds the reading of a request's header, and how
	// long a new connection may stay silent [10s] (Serve).
	ReadHeaderTimeout time.Duration
	// BodyIdleTimeout bounds the wait for each next byte of a request body
	// or of a duplex line [10s]; RequestTimeout bounds the whole body (or
	// line) too, counted from the end of the header (from a line's first
	// byte). A body cut by them is answered 408 request_timeout.
	BodyIdleTimeout time.Duration
	// KeepAliveTimeout closes keep-alive connections idle for this long
	// [2m] (Serve).
	KeepAliveTimeout time.Duration
	// MaxConns caps the open client connections; Serve answers the ones
	// beyond with 503 too_many_connections and closes them [0: no cap].
	MaxConns int
	// ShutdownReadGrace is how long, once a shutdown starts, clients
	// still sending a request's header or body (and connections that
	// sent nothing) are given before they are cut [1s] (Serve).
	ShutdownReadGrace time.Duration
	// DrainDelay is how long Serve keeps serving once its context ends,
	// with /readyz answering 503, before it stops accepting connections
	// [0]: time for a load balancer's readiness probes to take the
	// replica out of rotation, so that no client meets a closed port.
	DrainDelay time.Duration
	// RetryAfter is what a 429 for a full KV budget advises [1s].
	RetryAfter time.Duration
	// ReplicaID names this replica in the X-Streamguard-Replica header of
	// every response (a pod name behind a load balancer) [none: no header].
	ReplicaID string
	// RequireStreamID refuses a POST /v1/streams without a client-chosen
	// id in X-Streamguard-Stream (400 stream_id_required): behind a load
	// balancer that hashes that header, a stream opened without it would
	// land on one replica and its next requests on another [false].
	RequireStreamID bool
	// Playground serves the browser playground (internal/playground) at
	// GET / and its assets under GET /ui/ [false; streamguard serve turns
	// it on unless --ui=false]. The page holds no data and needs no key;
	// its API calls carry the tenant key the user enters.
	Playground bool
	// CheckHost refuses requests whose Host header names a host that is
	// not an IP address, localhost (or a name under .localhost) or one of
	// AllowedHosts: 403 host_not_allowed [false]. It is what stops DNS
	// rebinding, a web page whose name is re-pointed at this machine's
	// address and so is same-origin with the server to the browser;
	// streamguard serve turns it on for a server without tenants that
	// listens on a loopback address or on every address. /healthz and
	// /readyz answer any Host, and a request without one passes (no
	// browser sends such).
	CheckHost bool
	// AllowedHosts are the host names CheckHost lets through besides
	// those (case-insensitive; ".example.com" allows the names under it).
	AllowedHosts []string
	Scheduler    SchedulerOptions
	// Audit receives decisions [discarded]; Log receives operational
	// messages [discarded].
	Audit, Log *slog.Logger
}

// Server is the HTTP moderation service.
type Server struct {
	model           *guard.Model
	info            guard.Info
	name            string
	opts            Options
	maxStreamTokens int
	categories      []string // response then query-only category labels

	sched    *Scheduler
	budget   *kvBudget
	tenants  *tenants
	sessions *sessions
	// streamIDs are the ids of streams being opened (affinity.go).
	streamIDs streamIDs
	// declared are the LiteLLM requests' tool definitions judged safe,
	// by tenant and policy (internal/safecache).
	declared *safecache.Cache
	metrics  *metrics
	audit    *slog.Logger
	log      *slog.Logger

	mux         *http.ServeMux
	started     time.Time       // for /v1/models
	drainCtx    context.Context // ends when the server starts draining
	drainCancel context.CancelFunc
	cutCtx      context.Context // ends when body reads in progress are cut
	cutCancel   context.CancelFunc
	janitor     chan struct{}
	stopped     atomic.Bool
	grpc        atomic.Pointer[grpc.Server] // the ext_proc server (extproc.go)
}

// minStreamTokens is the shortest stream a KV budget must hold: a prompt
// and an answer of a few sentences.
const minStreamTokens = 64

// New builds a server and starts its scheduler.
func New(opts Options) (*Server, error) {
	if opts.Model == nil {
		return nil, errors.New("server: no model")
	}
	info := opts.Model.Info()
	if opts.ModelName == "" {
		opts.ModelName = "qwen3guard-stream"
	}
	if opts.MaxStreamTokens <= 0 || opts.MaxStreamTokens > info.MaxPositions {
		if opts.MaxStreamTokens > info.MaxPositions {
			return nil, fmt.Errorf("server: max stream length %d exceeds the model's max_position_embeddings %d", opts.MaxStreamTokens, info.MaxPositions)
		}
		opts.MaxStreamTokens = info.MaxPositions
	}
	if opts.StreamReserveTokens <= 0 {
		opts.StreamReserveTokens = 256
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	if opts.KVBudgetWait == 0 {
		opts.KVBudgetWait = 10 * time.Second
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	if opts.BodyIdleTimeout <= 0 {
		opts.BodyIdleTimeout = 10 * time.Second
	}
	if opts.KeepAliveTimeout <= 0 {
		opts.KeepAliveTimeout = 2 * time.Minute
	}
	if opts.ShutdownReadGrace <= 0 {
		opts.ShutdownReadGrace = time.Second
	}
	discard := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if opts.Audit == nil {
		opts.Audit = discard
	}
	if opts.Log == nil {
		opts.Log = discard
	}
	if b := budgetFor(opts.KVBudgetBytes, info.KVCapacityBytes); b != opts.KVBudgetBytes {
		opts.Log.Info("KV budget set to the device's cache pool", "bytes", b, "asked", opts.KVBudgetBytes)
		opts.KVBudgetBytes = b
	}
	ts, err := newTenants(opts.Config, opts.Model)
	if err != nil {
		return nil, err
	}
	srv := &Server{
		model: opts.Model, info: info, name: opts.ModelName, opts: opts, maxStreamTokens: opts.MaxStreamTokens, declared: safecache.New(safecache.Entries),
		budget:   newKVBudget(opts.KVBudgetBytes, info.KVBytesPerToken, info.MaxPositions, opts.KVBudgetWait),
		tenants:  ts,
		sessions: newSessions(),
		metrics:  newMetrics(),
		audit:    opts.Audit,
		log:      opts.Log,
		janitor:  make(chan struct{}),
		started:  time.Now(),
	}
	// A stream longer than the whole budget could never be admitted: its
	// charge would be refused as if the budget were only full, an
	// overload (429; a fail-open tenant's text forwarded unjudged), for
	// input that is too long. Streams are held to what the budget can
	// take, so that such input is a length error like any other.
	if n := srv.budget.longestStream(info.MaxPositions); n < srv.maxStreamTokens {
		if n < minStreamTokens {
			return nil, fmt.Errorf("server: the KV budget of %d bytes holds a stream of %d tokens at most; give it room for at least %d (%d bytes a token)", opts.KVBudgetBytes, n, minStreamTokens, info.KVBytesPerToken)
		}
		opts.Log.Warn("max stream length lowered to what the KV budget holds", "tokens", n, "asked", srv.maxStreamTokens)
		srv.maxStreamTokens = n
	}
	srv.drainCtx, srv.drainCancel = context.WithCancel(context.Background())
	srv.cutCtx, srv.cutCancel = context.WithCancel(context.Background())
	srv.categories = append(srv.categories, info.Labels.ResponseCategory...)
	for _, c := range info.Labels.QueryCategory {
		if !contains(srv.categories, c) {
			srv.categories = append(srv.categories, c)
		}
	}
	srv.metrics.device, srv.metrics.deviceNote = info.Device, info.DeviceNote
	srv.metrics.kvUsed = srv.budget.usage
	srv.metrics.kvWaits = srv.budget.waits
	srv.metrics.kvBytesPerPos = info.KVBytesPerToken
	srv.metrics.sessionsOpen = srv.sessions.len
	srv.sched = NewScheduler(opts.Model, opts.Scheduler, srv.metrics.step)
	srv.routes()
	go srv.expireLoop()
	return srv, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Handler serves the API.
func (srv *Server) Handler() http.Handler { return srv }

// expireLoop closes idle streams.
func (srv *Server) expireLoop() {
	every := max(srv.opts.IdleTimeout/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-srv.janitor:
			return
		case now := <-t.C:
			if n := srv.sessions.expire(now.Add(-srv.opts.IdleTimeout)); n > 0 {
				srv.log.Info("idle streams expired", "count", n)
			}
		}
	}
}

// Drain starts a graceful shutdown: /readyz turns 503 and duplex
// connections end after their current operation. Requests in progress,
// and new requests on connections already open, are still served.
func (srv *Server) Drain() {
	srv.metrics.shutdownStarted.Store(true)
	srv.drainCancel()
}

// Close ends the server once no request is being served (after
// http.Server.Shutdown): it closes every stream, lets the scheduler finish
// the steps in flight, and stops it.
func (srv *Server) Close() {
	if srv.stopped.Swap(true) {
		return
	}
	srv.Drain()
	srv.cutCancel()
	close(srv.janitor)
	srv.sessions.closeAll()
	srv.sched.Close()
}

// ShutdownReport counts the work a server took and answered.
type ShutdownReport struct {
	Accepted, Answered int64
}

// Report returns the counts of accepted and answered work.
func (srv *Server) Report() ShutdownReport {
	return ShutdownReport{Accepted: srv.metrics.accepted.Load(), Answered: srv.metrics.answered.Load()}
}

// Serve serves on ln until ctx ends, then shuts down gracefully: /readyz
// turns 503 and, after DrainDelay, it stops accepting connections, finishes every request in progress (their
// steps included), waits up to grace for them, and closes the server.
// Clients still sending a request (header or body) when the shutdown
// starts, and connections that sent nothing, are cut after
// ShutdownReadGrace: a slow client cannot hold the shutdown.
func (srv *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	cc := srv.countConns(ln)
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: srv.opts.ReadHeaderTimeout,
		IdleTimeout:       srv.opts.KeepAliveTimeout,
		ConnState:         cc.connState,
		ErrorLog:          slog.NewLogLogger(srv.log.Handler(), slog.LevelWarn),
	}
	ln = cc
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	srv.log.Info("shutting down", "grace", grace.String(), "drain_delay", srv.opts.DrainDelay.String())
	srv.Drain()
	if d := srv.opts.DrainDelay; d > 0 {
		// Still listening and serving: only /readyz says the replica is
		// going away.
		select {
		case <-time.After(d):
		case err := <-errc:
			srv.Close()
			return err
		}
	}
	shutDone := make(chan struct{})
	defer close(shutDone)
	go func() {
		// Once the grace for readers is over, cut them, and keep cutting
		// any that start sending afterwards.
		every := min(srv.opts.ShutdownReadGrace, grace)
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			select {
			case <-shutDone:
				return
			case <-t.C:
			}
			srv.cutCancel()
			if n := cc.cutNew(); n > 0 {
				srv.log.Info("cut clients still sending a request", "connections", n)
			}
			t.Reset(every)
		}
	}()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	grpcDone := srv.stopExtProc()
	err := hs.Shutdown(sctx)
	if err != nil {
		hs.Close()
	}
	select {
	case <-grpcDone:
	case <-sctx.Done():
		if gs := srv.grpc.Load(); gs != nil {
			gs.Stop() // cuts the exchanges still open
		}
		<-grpcDone
	}
	srv.Close()
	rep := srv.Report()
	attrs := []any{"accepted", rep.Accepted, "answered", rep.Answered}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	srv.log.Info("shutdown complete", attrs...)
	if err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}
