package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// FuzzRequestBodies sends request bodies a client controls to the
// server's JSON endpoints: /v1/moderations, the streams API (create,
// resume, append, prompt), the duplex connection's lines and the LiteLLM
// guardrail API. It checks that every request is answered (no handler
// panic, which net/http logs, and no 5xx other than the model's own
// limits) and that the server stays up.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []struct {
		route uint8
		a, b  string
	}{
		{0, `{"input":"hello there"}`, ``},
		{0, `{"input":[{"type":"text","text":"hi"}],"model":"m"}`, ``},
		{0, `{"input":{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}]}}`, ``},
		{1, `{"prompt":"hello"}`, `{"text":"some answer"}`},
		{1, `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}`, `{"ids":[1,2,3],"flush":true}`},
		{1, `{"prompt":"hello","resume":true,"response":[{"text":"ab"},{"ids":[5]},{"flush":true}],"turns":[{"prompt":"again","response":{"text":"x"}}],"tokens_from":0}`, `{"text":"y"}`},
		{2, `{"prompt":"hello"}`, `{"prompt":"next question"}`},
		{3, `{"op":"open","prompt":"hi"}`, `{"op":"append","text":"abc"}` + "\n" + `{"op":"flush"}` + "\n" + `{"op":"prompt","prompt":"q"}` + "\n" + `{"op":"close"}`},
		{3, `{"op":"open","prompt":"hi","resume":true,"response":{"text":"t"}}`, `{"op":"state","seq":7}`},
		{4, `{"texts":["hello"],"input_type":"request","litellm_call_id":"c1"}`, ``},
		{4, `{"texts":["hello"],"input_type":"response","request_data":{"messages":[{"role":"user","content":"hi"}]}}`, ``},
	} {
		f.Add(s.route, []byte(s.a), []byte(s.b))
	}
	var mu sync.Mutex
	var errLog bytes.Buffer
	srv, err := New(Options{Model: testModel(f), Audit: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config.ErrorLog = log.New(lockedWriter{&mu, &errLog}, "", 0)
	ts.Start()
	f.Cleanup(func() { ts.Close(); srv.Close() })
	post := func(t *testing.T, method, path string, body []byte) (int, []byte) {
		req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, path, err)
		}
		return resp.StatusCode, out
	}
	f.Fuzz(func(t *testing.T, route uint8, a, b []byte) {
		var codes []int
		var bodies [][]byte
		do := func(method, path string, body []byte) (int, []byte) {
			c, out := post(t, method, path, body)
			codes, bodies = append(codes, c), append(bodies, out)
			return c, out
		}
		switch route % 5 {
		case 0:
			do("POST", "/v1/moderations", a)
		case 1, 2:
			c, out := do("POST", "/v1/streams", a)
			if c/100 == 2 {
				var r struct{ ID string }
				_ = json.Unmarshal(out, &r)
				if route%5 == 1 {
					do("POST", "/v1/streams/"+r.ID+"/append", b)
				} else {
					do("POST", "/v1/streams/"+r.ID+"/prompt", b)
				}
				do("POST", "/v1/streams/"+r.ID+"/flush", nil)
				do("DELETE", "/v1/streams/"+r.ID, nil)
			}
		case 3:
			do("POST", "/v1/streams/connect", append(append(append([]byte{}, a...), '\n'), b...))
		case 4:
			do("POST", "/beta/litellm_basic_guardrail_api", a)
		}
		t.Logf("codes %v, first answer %.200s", codes, bodies[0])
		for i, c := range codes {
			if c >= 500 && c != http.StatusServiceUnavailable {
				t.Fatalf("request %d: status %d: %s", i, c, bodies[i])
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if errLog.Len() > 0 {
			s := errLog.String()
			errLog.Reset()
			if strings.Contains(s, "panic") {
				t.Fatalf("server error log:\n%s", s)
			}
		}
	})
}
