package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// The ext_proc service's own behaviour is tested in internal/extproc with
// a full Envoy stand-in; here, its wiring: tenants' keys and policies, the
// scheduler, the metrics, and streams released when Envoy goes away.

func extProcClient(t *testing.T, h *harness) extprocv3.ExternalProcessorClient {
	t.Helper()
	svc, err := h.srv.ExtProc(ExtProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln := bufconn.Listen(1 << 20)
	go h.srv.ServeExtProc(ln, svc)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		<-h.srv.stopExtProc()
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

func epHeaders(pseudo, h map[string]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for k, v := range pseudo {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	for k, v := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return m
}

type epStream struct {
	t  *testing.T
	st extprocv3.ExternalProcessor_ProcessClient
}

func (s epStream) do(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	s.t.Helper()
	if err := s.st.Send(r); err != nil {
		s.t.Fatal(err)
	}
	resp, err := s.st.Recv()
	if err != nil {
		s.t.Fatal(err)
	}
	return resp
}

func (s epStream) request(key, body string) *extprocv3.ProcessingResponse {
	s.t.Helper()
	h := map[string]string{"content-type": "application/json"}
	if key != "" {
		h["authorization"] = "Bearer " + key
	}
	r := s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: epHeaders(map[string]string{":method": "POST", ":path": "/v1/chat/completions"}, h)}}})
	if r.GetImmediateResponse() != nil {
		return r
	}
	if rm := r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders(); key != "" && !strings.Contains(strings.Join(rm, ","), "authorization") {
		s.t.Errorf("the tenant key is not removed from the upstream request: %v", rm)
	}
	return s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}})
}

func sseChunk(text string) []byte {
	return fmt.Appendf(nil, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", text)
}

func TestExtProcWiring(t *testing.T) {
	m := testModel(t)
	cfg := flagAndPassTenants(m, nil)
	h := newHarness(t, Options{Config: cfg, KVBudgetBytes: 64 << 20})
	client := extProcClient(t, h)
	chat := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, testPrompt)

	open := func() (epStream, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return epStream{t, st}, cancel
	}

	// No key: the server's 401.
	s, cancel := open()
	r := s.request("", chat)
	if im := r.GetImmediateResponse(); im == nil || im.GetStatus().GetCode() != 401 || !strings.Contains(string(im.GetBody()), "invalid_api_key") {
		t.Fatalf("no key: %v", r)
	}
	cancel()

	// Tenant a's policy flags every prompt.
	s, cancel = open()
	r = s.request("key-a", chat)
	if im := r.GetImmediateResponse(); im == nil || im.GetStatus().GetCode() != 400 || !strings.Contains(string(im.GetBody()), "content_filter") {
		t.Fatalf("tenant a: %v", r)
	}
	cancel()

	// Tenant b: a whole streamed answer.
	s, cancel = open()
	if r = s.request("key-b", chat); r.GetRequestBody() == nil {
		t.Fatalf("tenant b: %v", r)
	}
	s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: epHeaders(map[string]string{":status": "200"}, map[string]string{"content-type": "text/event-stream"})}}})
	var got []byte
	for i, c := range [][]byte{sseChunk("Boil water, "), sseChunk("then steep."), []byte("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")} {
		r = s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: c, EndOfStream: i == 2}}})
		got = append(got, r.GetResponseBody().GetResponse().GetBodyMutation().GetBody()...)
	}
	if !strings.Contains(string(got), "then steep.") || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Fatalf("tenant b's answer: %q", got)
	}
	cancel()

	// Tenant b again, and Envoy goes away mid-answer: the stream, its KV
	// budget and the tenant's connection are released.
	s, cancel = open()
	s.request("key-b", chat)
	s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: epHeaders(map[string]string{":status": "200"}, map[string]string{"content-type": "text/event-stream"})}}})
	s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: sseChunk("Boil water, ")}}})
	if n := h.srv.metrics.openStreams.Load(); n != 1 {
		t.Errorf("%d streams open mid-answer", n)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		used, _ := h.srv.budget.usage()
		conns := int64(0)
		for _, t := range h.srv.tenants.all() {
			conns += t.conns.Load()
		}
		if h.srv.metrics.openStreams.Load() == 0 && used == 0 && conns == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the client went away: %d streams open, %d KV bytes charged, %d connections", h.srv.metrics.openStreams.Load(), used, conns)
		}
		time.Sleep(5 * time.Millisecond)
	}

	var sb strings.Builder
	h.srv.metrics.write(&sb)
	for _, want := range []string{
		`streamguard_requests_total{tenant="-",route="ext_proc",code="401"} 1`,
		`streamguard_requests_total{tenant="a",route="ext_proc",code="400"} 1`,
		`streamguard_requests_total{tenant="b",route="ext_proc",code="200"} 2`,
		`streamguard_proxy_requests_total{tenant="a",event="prompt_flagged"} 1`,
		`streamguard_proxy_requests_total{tenant="b",event="allowed"} 1`,
		`streamguard_proxy_requests_total{tenant="b",event="client_closed"} 1`,
	} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, sb.String())
		}
	}
}

// The gRPC server takes the largest message the service reads (Envoy sends
// a BUFFERED body in one message): a body over grpc-go's default 4 MiB is
// answered by the service (here one over the 8 MiB a request may have,
// refused on its length, 413), not failed by the transport, which Envoy
// would turn into its own 500.
func TestExtProcTakesLargeBodies(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: flagAndPassTenants(m, nil)})
	client := extProcClient(t, h)
	st, err := client.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := epStream{t, st}
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 8<<20) + `"}]}`
	r := s.request("key-b", body)
	if im := r.GetImmediateResponse(); im == nil || im.GetStatus().GetCode() != 413 {
		t.Fatalf("a %d-byte request body: %v; want the service's 413", len(body), r)
	}
}

// panicking is an ext_proc service (and a unary method) whose handlers
// panic.
type panicking struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (panicking) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	panic("stream boom")
}

var panickingUnary = grpc.ServiceDesc{
	ServiceName: "streamguard.test.Panicking",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := &extprocv3.ProcessingRequest{}
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(context.Context, any) (any, error) { panic("unary boom") }
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/streamguard.test.Panicking/Unary"}, h)
	}}},
}

// TestExtProcRecoversPanics: a panic in a handler of the ext_proc gRPC
// server ends that call with codes.Internal and is logged with its stack;
// the server (and the process) go on serving.
func TestExtProcRecoversPanics(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	gs := newGRPCServer(slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	gs.RegisterService(&extprocv3.ExternalProcessor_ServiceDesc, panicking{})
	gs.RegisterService(&panickingUnary, struct{}{})
	ln := bufconn.Listen(1 << 20)
	go gs.Serve(ln)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	for i := range 2 { // the second call: the server is still there
		st, err := client.Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&extprocv3.ProcessingRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "/envoy.service.ext_proc.v3.ExternalProcessor/Process") {
			t.Fatalf("call %d: %v, want codes.Internal", i, err)
		}
	}
	err = conn.Invoke(context.Background(), "/streamguard.test.Panicking/Unary", &extprocv3.ProcessingRequest{}, &extprocv3.ProcessingResponse{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("unary call: %v, want codes.Internal", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := logs.String(); strings.Count(got, "grpc: handler panic") != 3 || !strings.Contains(got, "stream boom") ||
		!strings.Contains(got, "unary boom") || !strings.Contains(got, "panicking.Process") {
		t.Errorf("log:\n%s", got)
	}
}

// Behind ext_proc every route's headers pass through the service, and a
// tenant's streamguard key reaches no upstream on any of them: on the
// routes the guard does not judge (GET /v1/models, POST /v1/embeddings)
// Authorization and X-Api-Key are removed as on the judged ones, and the
// caller's X-Upstream-Authorization becomes Authorization. Nobody was
// admitted there, so no tenant's upstream_key is put in: the first
// tenant's (the default) would otherwise serve any caller.
func TestExtProcOtherRoutesDropTenantKey(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, _ *TenantConfig) {
		a.Proxy.UpstreamKey = "sk-tenant-upstream"
	}), KVBudgetBytes: 64 << 20})
	client := extProcClient(t, h)
	for _, c := range []struct {
		method, path string
		header       map[string]string
		remove       []string
		auth         string
	}{
		{"GET", "/v1/models", map[string]string{"authorization": "Bearer key-a"}, []string{"authorization"}, ""},
		{"POST", "/v1/embeddings", map[string]string{"x-api-key": "key-a"}, []string{"x-api-key"}, ""},
		{"POST", "/v1/embeddings", map[string]string{"x-api-key": "key-b", "x-upstream-authorization": "Bearer sk-caller"},
			[]string{"x-api-key", "x-upstream-authorization"}, "Bearer sk-caller"},
		{"GET", "/v1/models", map[string]string{"accept-encoding": "gzip"}, nil, ""},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := epStream{t, st}.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: epHeaders(map[string]string{":method": c.method, ":path": c.path}, c.header)}}})
		cancel()
		mut := r.GetRequestHeaders().GetResponse().GetHeaderMutation()
		var auth []string
		for _, o := range mut.GetSetHeaders() {
			auth = append(auth, o.GetHeader().GetKey()+": "+string(o.GetHeader().GetRawValue())+o.GetHeader().GetValue())
		}
		want := []string(nil)
		if c.auth != "" {
			want = []string{"authorization: " + c.auth}
		}
		if r.GetImmediateResponse() != nil || !slices.Equal(mut.GetRemoveHeaders(), c.remove) || !slices.Equal(auth, want) {
			t.Errorf("%s %s %v: removed %v, set %v (immediate %v); want removed %v, set %v",
				c.method, c.path, c.header, mut.GetRemoveHeaders(), auth, r.GetImmediateResponse(), c.remove, want)
		}
	}
}
