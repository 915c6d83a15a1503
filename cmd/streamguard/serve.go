package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/extproc"
	"github.com/streamguard/streamguard/internal/proxy"
	"github.com/streamguard/streamguard/internal/server"
)

func init() {
	register(&command{
		name:    "serve",
		summary: "serve streaming moderation over HTTP for many tenants (continuous batching)",
		run: func(args []string, stdout, stderr io.Writer) error {
			return runServe(args, os.Stdin, stdout, stderr)
		},
	})
}

func runServe(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "--model DIR|ORG/NAME[@REV] [--addr HOST:PORT] [--config FILE] [flags]", stderr)
	model := fs.String("model", "", modelFlagHelp)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port)")
	configPath := fs.String("config", "", "tenant file (JSON); without it every request is served as tenant \"default\", unauthenticated")
	name := fs.String("model-name", "", "model name reported in responses (default: the folder's name)")
	kvBudget := fs.String("kv-budget", "2GiB", "KV-cache memory for all streams (e.g. 512MiB, 4GiB; 0: unlimited)")
	reserve := fs.Int("stream-reserve", 256, "response tokens a new stream is charged for up front")
	maxTokens := fs.Int("max-stream-tokens", 0, "longest stream in tokens (0: the model's max_position_embeddings)")
	maxBody := fs.String("max-body", "1MiB", "largest request body, and largest duplex line")
	idle := fs.Duration("idle-timeout", 5*time.Minute, "close streams unused for this long")
	reqTimeout := fs.Duration("request-timeout", 30*time.Second, "longest a request (or duplex operation) may take, its body's reading included")
	grace := fs.Duration("shutdown-timeout", time.Minute, "on SIGTERM/SIGINT, how long to wait for requests in progress")
	drainDelay := fs.Duration("drain-delay", 0, "on SIGTERM/SIGINT, keep serving this long with /readyz answering 503 before closing the port (a few seconds more than the load balancer's readiness-probe period)")
	readGrace := fs.Duration("shutdown-read-grace", time.Second, "on SIGTERM/SIGINT, how long clients still sending a request header or body get before they are cut")
	headerTimeout := fs.Duration("read-header-timeout", 10*time.Second, "longest a client may take to send a request header (and a new connection may stay silent)")
	bodyIdle := fs.Duration("body-idle-timeout", 10*time.Second, "longest wait for the next byte of a request body or duplex line (the whole body is bounded by --request-timeout)")
	keepAlive := fs.Duration("keepalive-timeout", 2*time.Minute, "close keep-alive connections idle for this long")
	maxConns := fs.Int("max-conns", 2048, "most client connections open at once; more are answered 503 and closed (0: no cap)")
	chunk := fs.Int("chunk-tokens", 64, "tokens one stream feeds per step (prompt prefills are cut into chunks)")
	batchTokens := fs.Int("max-batch-tokens", 1024, "tokens per step")
	batchStreams := fs.Int("max-batch-streams", 0, "streams per step (0: no cap; 1: no batching)")
	retry := fs.Duration("retry-after", time.Second, "Retry-After advised when the KV budget is full")
	budgetWait := fs.Duration("kv-budget-wait", 10*time.Second, "how long a request waits, in arrival order, for KV-cache memory when the budget is full, before its 429 (0: no wait)")
	threads := threadsFlag(fs, "kernel goroutines, `n` up to 1024 (0: GOMAXPROCS)")
	device := deviceFlag(fs)
	kvCache := kvCacheFlag(fs, "bf16")
	repackCache := repackCacheFlag(fs)
	auditPath := fs.String("audit-log", "", "audit log file, JSON lines (default: stderr, with \"log\":\"audit\")")
	upstream := fs.String("upstream", "", "OpenAI-compatible base URL: also serve POST /v1/chat/completions and POST /v1/responses, moderated")
	upHeader := fs.Duration("upstream-header-timeout", proxy.DefaultHeaderTimeout, "with --upstream: how long to wait for the upstream's response headers (then 504 upstream_timeout)")
	upIdle := fs.Duration("upstream-idle-timeout", proxy.DefaultIdleTimeout, "with --upstream: how long to wait for each next part of the upstream's response body (then 504, or an error event once streaming)")
	fwdCookies := fs.Bool("forward-cookies", false, "with --upstream: pass the client's Cookie header to the upstream and the upstream's Set-Cookie back (off: neither)")
	extProcAddr := fs.String("ext-proc-addr", "", "also serve Envoy's external processing API (gRPC ext_proc) on this address: chat completions and responses an Envoy gateway relays are judged as the proxy judges them")
	extProcWait := fs.Duration("ext-proc-chunk-wait", extproc.DefaultChunkWait, "with --ext-proc-addr, hold-back: how long the answer to a streamed response chunk may wait for the verdicts that release its text (keep it under the filter's message_timeout)")
	replicaID := fs.String("replica-id", "", "name this replica in the X-Streamguard-Replica header of every response (behind a load balancer: the pod or host name)")
	requireID := fs.Bool("require-stream-id", false, "refuse POST /v1/streams without a client-chosen id in X-Streamguard-Stream (400 stream_id_required): set it behind a load balancer that hashes that header")
	hashKey := fs.Bool("hash-key", false, "read an API key (the first line on stdin, without its line ending), print the SHA-256 the tenant file stores, and exit")
	jsonOut := fs.Bool("json", false, "print the startup and shutdown reports as JSON lines on stdout")
	allowedHosts := fs.String("allowed-hosts", "", "host names (comma-separated; .example.com for the names under it) the Host header may name besides IP addresses and localhost; \"*\": any. Default: any, except without --config on a loopback or every-address --addr (0.0.0.0, ::), where only IP addresses and localhost are answered (against DNS rebinding)")
	ui := fs.Bool("ui", true, "serve the browser playground at / (HTML, CSS and JavaScript built in; with --config it asks for a tenant key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *hashKey {
		key, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return err
		}
		key = strings.TrimRight(key, "\r\n")
		if key == "" {
			return usageErrorf("--hash-key: no key on stdin")
		}
		if strings.TrimSpace(key) != key {
			// A header's value reaches the server without them, so
			// this hash would never match.
			return usageErrorf("--hash-key: the key begins or ends with white space, which HTTP drops from a header's value; use a key without")
		}
		fmt.Fprintln(stdout, server.HashKey(key))
		return nil
	}
	if *model == "" {
		return usageErrorf("--model is required")
	}
	budget, err := parseSize(*kvBudget)
	if err != nil {
		return usageErrorf("--kv-budget: %v", err)
	}
	bodyLimit, err := parseSize(*maxBody)
	if err != nil || bodyLimit <= 0 {
		return usageErrorf("--max-body: want a positive size, got %q", *maxBody)
	}
	if strings.IndexFunc(*replicaID, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return usageErrorf("--replica-id must not hold control characters (it is sent as a header)")
	}
	if *drainDelay < 0 {
		return usageErrorf("--drain-delay must not be negative")
	}
	if *budgetWait < 0 {
		return usageErrorf("--kv-budget-wait must not be negative")
	}
	if *maxConns < 0 || *readGrace <= 0 || *headerTimeout <= 0 || *bodyIdle <= 0 || *keepAlive <= 0 {
		return usageErrorf("--max-conns must not be negative; --shutdown-read-grace, --read-header-timeout, --body-idle-timeout and --keepalive-timeout must be positive")
	}
	if *chunk < 1 || *batchTokens < 1 || *batchStreams < 0 || *reserve < 0 || *maxTokens < 0 {
		return usageErrorf("--chunk-tokens and --max-batch-tokens must be at least 1; --max-batch-streams, --stream-reserve and --max-stream-tokens not negative")
	}
	var cfg *server.Config
	if *configPath != "" {
		if cfg, err = server.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	checkHost, hosts, err := hostCheck(*allowedHosts, *addr, cfg)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	audit := logger.With("log", "audit")
	if *auditPath != "" {
		f, err := os.OpenFile(*auditPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		audit = slog.New(slog.NewJSONHandler(f, nil))
	}
	dir, err := resolveModel(*model, stderr)
	if err != nil {
		return err
	}
	m, err := guard.Load(context.Background(), dir, guard.Options{Threads: *threads, Device: *device, KVCache: *kvCache, RepackCache: *repackCache})
	if err != nil {
		return err
	}
	defer m.Close()
	reportDevice(stderr, *device, m)
	reportRepack(stderr, m)
	if *name == "" {
		*name = filepath.Base(filepath.Clean(dir))
	}
	srv, err := server.New(server.Options{
		Model: m, ModelName: *name, Config: cfg, KVBudgetBytes: budget, StreamReserveTokens: *reserve,
		MaxStreamTokens: *maxTokens, MaxBodyBytes: bodyLimit, IdleTimeout: *idle, RequestTimeout: *reqTimeout,
		RetryAfter: *retry, KVBudgetWait: waitOption(*budgetWait), Audit: audit, Log: logger,
		ReadHeaderTimeout: *headerTimeout, BodyIdleTimeout: *bodyIdle, KeepAliveTimeout: *keepAlive, MaxConns: *maxConns, ShutdownReadGrace: *readGrace, DrainDelay: *drainDelay,
		ReplicaID: *replicaID, RequireStreamID: *requireID, Playground: *ui, CheckHost: checkHost, AllowedHosts: hosts,
		Scheduler: server.SchedulerOptions{ChunkTokens: *chunk, MaxBatchTokens: *batchTokens, MaxBatchStreams: *batchStreams},
	})
	if err != nil {
		return err
	}
	if *upstream != "" {
		if *upHeader <= 0 || *upIdle <= 0 {
			srv.Close()
			return usageErrorf("--upstream-header-timeout and --upstream-idle-timeout must be positive")
		}
		if err := srv.MountProxy(server.ProxyOptions{Upstream: *upstream, HeaderTimeout: *upHeader, IdleTimeout: *upIdle, ForwardCookies: *fwdCookies}); err != nil {
			srv.Close()
			return err
		}
	}
	var extLn net.Listener
	if *extProcAddr != "" {
		if *extProcWait <= 0 {
			srv.Close()
			return usageErrorf("--ext-proc-chunk-wait must be positive")
		}
		svc, err := srv.ExtProc(server.ExtProcOptions{ChunkWait: *extProcWait})
		if err == nil {
			extLn, err = net.Listen("tcp", *extProcAddr)
		}
		if err != nil {
			srv.Close()
			return err
		}
		go func() {
			if err := srv.ServeExtProc(extLn, svc); err != nil {
				logger.Error("ext_proc server", "error", err.Error())
			}
		}()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		if extLn != nil {
			extLn.Close()
		}
		srv.Close()
		return err
	}
	// Signals are caught from here on: a SIGTERM right after the
	// listening report shuts down gracefully too.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tenants := 0
	if cfg != nil {
		tenants = len(cfg.Tenants)
	}
	report(stdout, *jsonOut, map[string]any{
		"event": "listening", "addr": ln.Addr().String(), "model": *name, "tenants": tenants, "kv_budget_bytes": budget,
		"upstream": redactedURL(*upstream), "ext_proc_addr": addrText(extLn), "load_seconds": m.Info().LoadTime.Seconds(), "pid": os.Getpid(),
		"ui": *ui,
	}, fmt.Sprintf("streamguard serve: listening on http://%s%s (model %s, %s, KV budget %s%s%s)", ln.Addr(), extProcText(extLn), *name, tenantText(tenants), sizeText(budget), proxyText(*upstream), uiText(*ui, ln)))

	err = srv.Serve(ctx, ln, *grace)
	rep := srv.Report()
	report(stdout, *jsonOut, map[string]any{"event": "shutdown", "accepted": rep.Accepted, "answered": rep.Answered, "error": errText(err)},
		fmt.Sprintf("streamguard serve: stopped; %d requests accepted, %d answered", rep.Accepted, rep.Answered))
	return err
}

func report(w io.Writer, asJSON bool, v map[string]any, text string) {
	if asJSON {
		json.NewEncoder(w).Encode(v)
		return
	}
	fmt.Fprintln(w, text)
}

func addrText(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func extProcText(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ", ext_proc (gRPC) on " + ln.Addr().String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func uiText(on bool, ln net.Listener) string {
	if !on {
		return ""
	}
	return fmt.Sprintf("; playground at http://%s/", ln.Addr())
}

func tenantText(n int) string {
	switch n {
	case 0:
		return "no tenant file: unauthenticated"
	case 1:
		return "1 tenant"
	}
	return fmt.Sprintf("%d tenants", n)
}

// proxyText names the upstream of --upstream in the startup line, so that
// the line says the proxy is on; a password in the URL is masked, as the
// line goes to logs.
func proxyText(upstream string) string {
	if upstream == "" {
		return ""
	}
	return ", proxy to " + redactedURL(upstream)
}

// redactedURL is the upstream URL for reports and logs: a password in it
// masked.
func redactedURL(upstream string) string {
	if u, err := url.Parse(upstream); err == nil {
		return u.Redacted()
	}
	return upstream
}

// parseSize reads a byte count: a plain number or one with a unit (B, KB,
// MB, GB, KiB, MiB, GiB).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !(f >= 0) || f*float64(mult) > 1<<62 { // NaN fails f >= 0
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with a unit such as MiB or GiB", s)
	}
	return int64(f * float64(mult)), nil
}

func sizeText(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// waitOption maps a wait flag, where 0 means none, to the server option,
// where 0 means the default and a negative value none.
func waitOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// hostCheck decides serve's Host check (server.Options.CheckHost): names
// given with --allowed-hosts turn it on and "*" off; by default it is on
// for a server without tenants that listens on a loopback address or on
// every address (0.0.0.0, ::, the Docker image's own --addr, published on
// the host's 127.0.0.1 too), which any web page could otherwise reach by
// DNS rebinding, and off where tenant keys guard the server or it listens
// on one other address, which other machines may name as they please.
func hostCheck(flag, addr string, cfg *server.Config) (bool, []string, error) {
	if strings.TrimSpace(flag) == "*" {
		return false, nil, nil
	}
	var hosts []string
	for h := range strings.SplitSeq(flag, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if h == "*" || strings.ContainsAny(h, "/:@ []") {
			return false, nil, usageErrorf("--allowed-hosts: %q is not a host name (give names without ports, or \"*\" alone)", h)
		}
		hosts = append(hosts, h)
	}
	if len(hosts) > 0 {
		return true, hosts, nil
	}
	if cfg != nil && len(cfg.Tenants) > 0 {
		return false, nil, nil
	}
	// Where the server will listen, not how --addr spells it: net.Listen
	// resolves the host the same way ("LOCALHOST", a host name that
	// resolves to 127.0.1.1, "[::ffff:0.0.0.0]" for every address).
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		// net.Listen reports it, unless its own lookup succeeds (a
		// transient failure): on, as where the server may listen is
		// not known.
		return true, nil, nil
	}
	if ta.IP == nil {
		return true, nil, nil // ":8080": every address
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	ip = ip.Unmap()
	return ok && (ip.IsLoopback() || ip.IsUnspecified()), nil, nil
}
