package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/proxy"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// rawErr decodes an error answer keeping param as it was sent.
type rawErr struct {
	Error struct {
		Message     string  `json:"message"`
		Type        string  `json:"type"`
		Param       *string `json:"param"`
		Code        string  `json:"code"`
		StreamEnded bool    `json:"stream_ended"`
	} `json:"error"`
}

func wantTooLong(t *testing.T, what string, code int, e rawErr, param string, ended bool) {
	t.Helper()
	if code != http.StatusBadRequest || e.Error.Code != "context_length_exceeded" || e.Error.Type != "invalid_request_error" ||
		e.Error.Param == nil || *e.Error.Param != param || e.Error.StreamEnded != ended {
		p := "<null>"
		if e.Error.Param != nil {
			p = *e.Error.Param
		}
		t.Fatalf("%s: status %d, error %+v (param %s); want 400 context_length_exceeded, param %q, stream_ended %v", what, code, e.Error, p, param, ended)
	}
}

// TestContextLengthEveryEndpoint: input longer than --max-stream-tokens is
// the client's error on every endpoint, 400 context_length_exceeded in
// OpenAI's shape, even for a tenant that fails open; the proxy adapter
// keeps guard.ErrContextLength visible and does not call it an overload.
func TestContextLengthEveryEndpoint(t *testing.T) {
	cfg := twoTenants(func(a, b *TenantConfig) { a.Proxy.FailOpen = true })
	h := newHarness(t, Options{Config: cfg, MaxStreamTokens: 40})
	long := strings.Repeat("word ", 60)

	var e rawErr
	code, _ := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": long}, &e)
	wantTooLong(t, "moderations", code, e, "input", false)
	e = rawErr{}
	code, _ = h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": []string{"hi", long}}, &e)
	wantTooLong(t, "moderations, second input", code, e, "input", false)

	e = rawErr{}
	code, _ = h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a", map[string]any{"texts": []string{long}, "input_type": "request"}, &e)
	wantTooLong(t, "litellm", code, e, "texts", false)

	e = rawErr{}
	code, _ = h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": long}, &e)
	wantTooLong(t, "streams create", code, e, "prompt", false)
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open after a refused create", n)
	}

	var s streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &s); code != 201 {
		t.Fatalf("create: %d", code)
	}
	e = rawErr{}
	code, _ = h.do("POST", "/v1/streams/"+s.ID+"/prompt", "key-a", map[string]any{"messages": []tokenizer.Message{{Role: "user", Content: long}}}, &e)
	wantTooLong(t, "streams prompt", code, e, "messages", false)
	e = rawErr{}
	code, _ = h.do("POST", "/v1/streams/"+s.ID+"/append", "key-a", map[string]any{"ids": make([]int, 50)}, &e)
	wantTooLong(t, "append ids", code, e, "ids", false)
	e = rawErr{}
	code, _ = h.do("POST", "/v1/streams/"+s.ID+"/append", "key-a", map[string]any{"text": strings.Repeat(" a", 60)}, &e)
	wantTooLong(t, "append text", code, e, "text", true)

	d := h.connect("key-a", false)
	rep := d.do(map[string]any{"op": "open", "prompt": long})
	if rep.Error == nil || rep.Error.Code != "context_length_exceeded" || rep.Error.Type != "invalid_request_error" || rep.Error.Param == nil || *rep.Error.Param != "prompt" {
		t.Fatalf("duplex open: %+v", rep.Error)
	}
	if rep := d.do(map[string]any{"op": "open", "prompt": "hi"}); rep.Error != nil {
		t.Fatalf("duplex open after the refusal: %+v", rep.Error)
	}
	rep = d.do(map[string]any{"op": "append", "ids": make([]int, 50)})
	if rep.Error == nil || rep.Error.Code != "context_length_exceeded" || rep.Error.StreamEnded {
		t.Fatalf("duplex append: %+v", rep.Error)
	}

	// The proxy's moderator: the error stays a guard.ErrContextLength and
	// is not an overload (fail_open does not apply to it).
	ctx := context.WithValue(context.Background(), tenantKey{}, h.srv.tenants.all()[0])
	ps, err := h.srv.Moderator().Open(ctx, guard.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	_, err = ps.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: long}})
	if !errors.Is(err, guard.ErrContextLength) || errors.Is(err, proxy.ErrOverloaded) {
		t.Fatalf("proxy moderator: %v (context length %v, overloaded %v)", err, errors.Is(err, guard.ErrContextLength), errors.Is(err, proxy.ErrOverloaded))
	}
}

// TestContextLengthModelLimit: at the model's own limit (no
// --max-stream-tokens), text appended past max_position_embeddings gets
// what docs/API.md says: 400 context_length_exceeded, the stream ended.
func TestContextLengthModelLimit(t *testing.T) {
	h := newHarness(t, Options{})
	maxPos := testModel(t).Info().MaxPositions
	var s streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &s); code != 201 {
		t.Fatalf("create: %d", code)
	}
	var e rawErr
	code, _ := h.do("POST", "/v1/streams/"+s.ID+"/append", "", map[string]any{"text": strings.Repeat(" a", maxPos+10)}, &e)
	wantTooLong(t, "append text past the model's context", code, e, "text", true)
	if code, _ := h.do("GET", "/v1/streams/"+s.ID, "", nil, nil); code != 404 {
		t.Fatalf("ended stream: status %d", code)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Fatalf("%d positions charged", used)
	}
	e = rawErr{}
	code, _ = h.do("POST", "/v1/moderations", "", map[string]any{"input": strings.Repeat(" a", maxPos+10)}, &e)
	wantTooLong(t, "moderation past the model's context", code, e, "input", false)
}

// TestBearerSchemeCaseInsensitive: the auth scheme is matched without
// regard to case; other schemes are refused.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	for _, auth := range []string{"Bearer key-a", "bearer key-a", "BEARER key-a", "  bEaReR   key-a "} {
		req, _ := http.NewRequest("GET", h.ts.URL+"/v1/info", nil)
		req.Header.Set("Authorization", auth)
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var info infoResponse
		json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if resp.StatusCode != 200 || info.Tenant != "a" {
			t.Fatalf("%q: status %d tenant %q", auth, resp.StatusCode, info.Tenant)
		}
		if want := h.srv.info.KVCache; info.KVCache != want || want == "" {
			t.Fatalf("%q: kv_cache %q, the model's %q", auth, info.KVCache, want)
		}
		if info.Device != "cpu" || info.DeviceNote != "" {
			t.Fatalf("%q: device %q (note %q), want cpu", auth, info.Device, info.DeviceNote)
		}
	}
	for _, auth := range []string{"Basic key-a", "Bearerkey-a", "key-a"} {
		req, _ := http.NewRequest("GET", h.ts.URL+"/v1/info", nil)
		req.Header.Set("Authorization", auth)
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("%q: status %d", auth, resp.StatusCode)
		}
	}
}

// rawConn is a client that writes by hand.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) write(s string) error {
	_, err := io.WriteString(rc.c, s)
	return err
}

// answer reads a response (status and body), waiting at most wait.
func (rc *rawConn) answer(wait time.Duration) (int, string, error) {
	rc.c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

func postHeader(path, key string, length int) string {
	h := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, length)
	if key != "" {
		h += "Authorization: Bearer " + key + "\r\n"
	}
	return h + "\r\n"
}

// TestSlowBody: a body that stops arriving is cut after BodyIdleTimeout;
// one that trickles in is cut by RequestTimeout, which covers the body
// read. Both get 408 request_timeout, are not counted as work, and open
// no stream.
func TestSlowBody(t *testing.T) {
	h := newHarness(t, Options{BodyIdleTimeout: 2 * time.Second, RequestTimeout: 4 * time.Second})
	addr := h.ts.Listener.Addr().String()
	body := `{"input": "hello there, this body is sent one byte at a time: 50 ms a byte, 5 s in all"}`

	stalled := dialRaw(t, addr)
	stalled.write(postHeader("/v1/moderations", "", len(body)) + body[:5])
	code, resp, err := stalled.answer(20 * time.Second)
	if err != nil || code != http.StatusRequestTimeout || !strings.Contains(resp, `"code":"request_timeout"`) || !strings.Contains(resp, "no byte of the body") {
		t.Fatalf("stalled body: %d %q %v", code, resp, err)
	}

	trickle := dialRaw(t, addr)
	trickle.write(postHeader("/v1/moderations", "", len(body)))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(body); i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if trickle.write(body[i:i+1]) != nil {
				return
			}
		}
	}()
	code, resp, err = trickle.answer(20 * time.Second)
	if err != nil || code != http.StatusRequestTimeout || !strings.Contains(resp, "within the request timeout") {
		t.Fatalf("trickled body: %d %q %v", code, resp, err)
	}
	if rep := h.srv.Report(); rep.Accepted != 0 || rep.Answered != 0 {
		t.Fatalf("slow bodies counted as work: %+v", rep)
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open", n)
	}
	// A prompt body in time is still served.
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": "hi"}, nil); code != 200 {
		t.Fatalf("normal request: %d", code)
	}
}

// TestDuplexSlowLine: a duplex line begun and not finished within
// BodyIdleTimeout ends the connection with request_timeout and frees the
// stream.
func TestDuplexSlowLine(t *testing.T) {
	h := newHarness(t, Options{BodyIdleTimeout: 300 * time.Millisecond})
	d := h.connect("", false)
	d.do(map[string]any{"op": "open", "prompt": "hi"})
	if _, err := io.WriteString(d.w, `{"op": "app`); err != nil {
		t.Fatal(err)
	}
	rep, ok := d.recv()
	if !ok || rep.Error == nil || rep.Error.Code != "request_timeout" || !rep.Error.StreamEnded {
		t.Fatalf("slow line: %+v %v", rep, ok)
	}
	if _, ok := d.recv(); ok {
		t.Fatal("connection open after the timeout")
	}
	for h.srv.metrics.openStreams.Load() != 0 {
		runtime.Gosched()
	}
}

// serveOn runs srv.Serve on a fresh listener; stop cancels it and returns
// Serve's error.
func serveOn(t *testing.T, srv *Server, grace time.Duration) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, grace) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	var once bool
	var res error
	return ln.Addr().String(), func() error {
		if !once {
			once = true
			cancel()
			res = <-served
			served <- res
		}
		return res
	}
}

// TestConnCap: with MaxConns 2, the third connection is answered 503
// too_many_connections and closed; once one closes, a new one is served.
func TestConnCap(t *testing.T) {
	srv, err := New(Options{Model: testModel(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveOn(t, srv, 5*time.Second)
	a := dialRaw(t, addr)
	b := dialRaw(t, addr)
	for srv.metrics.openConns.Load() != 2 {
		time.Sleep(time.Millisecond)
	}
	c := dialRaw(t, addr)
	c.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	code, body, err := c.answer(20 * time.Second)
	if err != nil || code != 503 || !strings.Contains(body, `"code":"too_many_connections"`) {
		t.Fatalf("third connection: %d %q %v", code, body, err)
	}
	// The two within the cap are served.
	b.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, _, err := b.answer(20 * time.Second); err != nil || code != 200 {
		t.Fatalf("second connection: %d %v", code, err)
	}
	a.c.Close()
	for srv.metrics.openConns.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	d := dialRaw(t, addr)
	d.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, _, err := d.answer(20 * time.Second); err != nil || code != 200 {
		t.Fatalf("connection after one closed: %d %v", code, err)
	}
	if !strings.Contains(metricsOf(t, srv), `streamguard_rejected_total{reason="connections"} 1`) {
		t.Fatal("refusal not counted")
	}
}

func metricsOf(t *testing.T, srv *Server) string {
	var b strings.Builder
	srv.metrics.write(&b)
	return b.String()
}

// TestTenantConnCap: a tenant's max_conns counts its requests in progress
// (a slow body's included); beyond it the tenant gets 429
// connection_limit while other tenants are served.
func TestTenantConnCap(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.MaxConns = 1 }), BodyIdleTimeout: time.Minute, RequestTimeout: time.Minute})
	ta := h.srv.tenants.all()[0]
	slow := dialRaw(t, h.ts.Listener.Addr().String())
	slow.write(postHeader("/v1/moderations", "key-a", 100) + `{"inp`)
	for ta.conns.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	var e rawErr
	code, hdr := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": "hi"}, &e)
	if code != 429 || e.Error.Code != "connection_limit" || hdr.Get("Retry-After") == "" {
		t.Fatalf("tenant a beyond its cap: %d %+v", code, e.Error)
	}
	if code, _ := h.do("POST", "/v1/moderations", "key-b", map[string]any{"input": "hi"}, nil); code != 200 {
		t.Fatalf("tenant b: %d", code)
	}
	slow.c.Close()
	for ta.conns.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	if code, _ := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": "hi"}, nil); code != 200 {
		t.Fatalf("tenant a after the slow client left: %d", code)
	}
	if _, err := ParseConfig([]byte(`{"tenants":[{"name":"x","api_key_sha256":["` + HashKey("k") + `"],"max_conns":-1}]}`)); err == nil {
		t.Fatal("negative max_conns accepted")
	}
}

// TestShutdownWithStalledClients: a connection that sent nothing, one
// stuck in its header, one stuck in its body and an idle duplex
// connection do not hold the shutdown: Serve returns well within a long
// grace, without error, and a request in progress is still answered.
func TestShutdownWithStalledClients(t *testing.T) {
	srv, err := New(Options{Model: testModel(t), ReadHeaderTimeout: time.Hour, BodyIdleTimeout: time.Hour,
		RequestTimeout: time.Hour, ShutdownReadGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const grace = time.Minute
	addr, stop := serveOn(t, srv, grace)
	silent := dialRaw(t, addr)
	header := dialRaw(t, addr)
	header.write("POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Le")
	body := dialRaw(t, addr)
	body.write(postHeader("/v1/moderations", "", 100) + `{"inp`)
	duplex := dialRaw(t, addr)
	duplex.write("POST /v1/streams/connect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	duplex.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if resp, err := http.ReadResponse(duplex.r, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("duplex: %v %v", resp, err)
	}
	for srv.metrics.openConns.Load() != 4 {
		time.Sleep(time.Millisecond)
	}
	// A request in progress, waiting for its step.
	srv.sched.gate.Lock()
	done := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/v1/moderations", "application/json", strings.NewReader(`{"input":"hi"}`))
		if err != nil {
			done <- 0
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.Contains(string(b), `"results"`) {
			t.Errorf("request in progress: body %q %v", b, err)
		}
		done <- resp.StatusCode
	}()
	for srv.sched.queued() < 1 {
		runtime.Gosched()
	}
	t0 := time.Now()
	go func() {
		for !srv.isDraining() {
			runtime.Gosched()
		}
		time.Sleep(300 * time.Millisecond)
		srv.sched.gate.Unlock()
	}()
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Logf("shutdown took %s", time.Since(t0))
	if d := time.Since(t0); d > grace/2 {
		t.Fatalf("shutdown took %s with a grace of %s", d, grace)
	}
	if code := <-done; code != 200 {
		t.Fatalf("request in progress: status %d", code)
	}
	code, resp, err := body.answer(10 * time.Second)
	if err != nil || code != 503 || !strings.Contains(resp, "shutting_down") {
		t.Fatalf("slow body at shutdown: %d %q %v", code, resp, err)
	}
	for _, c := range []*rawConn{silent, header} {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.r.ReadByte(); err != io.EOF {
			t.Fatalf("stalled connection not closed: %v", err)
		}
	}
	if rep := srv.Report(); rep.Accepted != 1 || rep.Answered != 1 {
		t.Fatalf("report %+v\n%s", rep, metricsOf(t, srv))
	}
}
