package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHealthAndReady(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	get := func(path string) (int, string) {
		resp, err := h.ts.Client().Get(h.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("readyz: %d %q", code, body)
	}
	h.srv.Drain()
	if code, body := get("/readyz"); code != 503 || body != "draining\n" {
		t.Fatalf("readyz while draining: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz while draining: %d", code)
	}
}

// TestMetrics checks the exposition format and that the counters follow
// what the server did; level and category names come from the model.
func TestMetrics(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: twoTenants(nil)})
	var s streamResponse
	h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": testPrompt}, &s)
	var ap streamResponse
	h.do("POST", "/v1/streams/"+s.ID+"/append", "key-a", map[string]any{"ids": []int{9707, 11, 1879}}, &ap)
	h.do("POST", "/v1/streams", "nobody", map[string]any{"prompt": "x"}, nil)

	resp, err := h.ts.Client().Get(h.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	values := map[string]string{}
	typed := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			typed[strings.Fields(f)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed line %q", line)
		}
		name := line[:i]
		base := name
		if j := strings.IndexByte(name, '{'); j >= 0 {
			base = name[:j]
		}
		base = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(base, "_bucket"), "_sum"), "_count")
		if !typed[base] {
			t.Fatalf("sample %q before its TYPE line", line)
		}
		values[name] = line[i+1:]
	}
	want := map[string]string{
		`streamguard_requests_total{tenant="a",route="streams.create",code="201"}`: "1",
		`streamguard_requests_total{tenant="a",route="streams.append",code="200"}`: "1",
		`streamguard_requests_total{tenant="-",route="streams.create",code="401"}`: "1",
		`streamguard_tokens_judged_total`:                                          "3",
		`streamguard_open_streams`:                                                 "1",
		`streamguard_device_info{device="cpu",note=""}`:                            "1",
		`streamguard_sessions`:                                                     "1",
		`streamguard_steps_total`:                                                  values["streamguard_batch_streams_count"],
	}
	if n, _ := strconv.Atoi(values["streamguard_steps_total"]); n < 2 {
		t.Errorf("steps %q: want one for the prompt, one for the append at least", values["streamguard_steps_total"])
	}
	for k, v := range want {
		if values[k] != v {
			t.Errorf("%s = %q, want %s", k, values[k], v)
		}
	}
	pv := s.Prompt
	cat := pv.Category
	if pv.RiskIndex == 0 {
		cat = ""
	}
	key := `streamguard_verdicts_total{head="prompt",level="` + pv.Risk + `",category="` + cat + `"}`
	if values[key] != "1" {
		t.Errorf("%s = %q", key, values[key])
	}
	total := 0
	for k, v := range values {
		if strings.HasPrefix(k, `streamguard_verdicts_total{head="response"`) {
			var n int
			json.Unmarshal([]byte(v), &n)
			total += n
			if !strings.Contains(k, `level="`+m.Info().Labels.ResponseRisk[0]+`"`) && !strings.Contains(k, `level="`+m.Info().Labels.ResponseRisk[1]+`"`) &&
				!strings.Contains(k, `level="`+m.Info().Labels.ResponseRisk[2]+`"`) {
				t.Errorf("unknown level in %s", k)
			}
		}
	}
	if total != 3 {
		t.Errorf("%d response verdicts counted, want 3", total)
	}
	if values[`streamguard_step_seconds_bucket{le="+Inf"}`] != values["streamguard_step_seconds_count"] {
		t.Errorf("histogram +Inf bucket %q != count %q", values[`streamguard_step_seconds_bucket{le="+Inf"}`], values["streamguard_step_seconds_count"])
	}
}

func TestHistogramFormat(t *testing.T) {
	h := newHistogram(1, 2, 4)
	for _, v := range []float64{0.5, 1, 1.5, 3, 10} {
		h.observe(v)
	}
	var b strings.Builder
	h.write(&b, "x", "help")
	want := "x_bucket{le=\"1\"} 2\nx_bucket{le=\"2\"} 3\nx_bucket{le=\"4\"} 4\nx_bucket{le=\"+Inf\"} 5\nx_sum 16\nx_count 5\n"
	if !strings.HasSuffix(b.String(), want) {
		t.Fatalf("got\n%s", b.String())
	}
}

// TestGracefulShutdown: requests accepted before the shutdown, still
// waiting for their step, are all answered; new connections are refused;
// Serve reports every accepted request answered.
func TestGracefulShutdown(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	srv, err := New(Options{Model: testModel(t), Log: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, time.Minute) }()
	url := "http://" + ln.Addr().String()

	const n = 8
	srv.sched.gate.Lock() // the requests wait for a step that cannot run yet
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			resp, err := http.Post(url+"/v1/moderations", "application/json", strings.NewReader(`{"input": "hello `+strings.Repeat("x", i)+`"}`))
			if err != nil {
				t.Error(err)
				return
			}
			var body moderationResponse
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if len(body.Results) == 1 {
				codes[i] = resp.StatusCode
			}
		})
	}
	for srv.sched.queued() < n {
		runtime.Gosched()
	}
	cancel() // SIGTERM
	for !srv.isDraining() {
		runtime.Gosched()
	}
	srv.sched.gate.Unlock()
	wg.Wait()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: status %d", i, c)
		}
	}
	if rep := srv.Report(); rep.Accepted != n || rep.Answered != n {
		t.Fatalf("report %+v", rep)
	}
	if _, err := http.Post(url+"/v1/moderations", "application/json", strings.NewReader(`{"input": "late"}`)); err == nil {
		t.Fatal("a request after shutdown was served")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), `"msg":"shutdown complete","accepted":8,"answered":8`) {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// TestDrainDelay: once Serve's context ends, new connections are still
// served for DrainDelay, /readyz answering 503, and then the port closes.
func TestDrainDelay(t *testing.T) {
	srv, err := New(Options{Model: testModel(t), DrainDelay: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serveOn(t, srv, time.Minute)
	url := "http://" + addr
	get := func(path string) int {
		// A new connection each time, as a probe makes.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/readyz"); code != 200 {
		t.Fatalf("readyz before: %d", code)
	}
	start := time.Now()
	served := make(chan error, 1)
	go func() { served <- stop() }()
	for !srv.isDraining() {
		time.Sleep(time.Millisecond)
	}
	if code := get("/readyz"); code != 503 {
		t.Errorf("readyz while draining: %d, want 503", code)
	}
	if code := get("/v1/info"); code != 200 {
		t.Errorf("a request while draining: %d, want 200", code)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("Serve returned after %v, before the drain delay", d)
	}
	if code := get("/readyz"); code != 0 {
		t.Errorf("readyz after shutdown: %d, want a refused connection", code)
	}
}
