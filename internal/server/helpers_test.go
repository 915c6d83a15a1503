package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/guardtest"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// testModel is the tiny model every test package shares.
func testModel(t testing.TB) *guard.Model { return guardtest.Tiny(t) }

// harness is a server on an httptest listener.
type harness struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	audit *bytes.Buffer
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	if opts.Model == nil {
		opts.Model = testModel(t)
	}
	audit := &bytes.Buffer{}
	var mu sync.Mutex
	opts.Audit = slog.New(slog.NewJSONHandler(lockedWriter{&mu, audit}, nil))
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	var errLog bytes.Buffer
	ts.Config.ErrorLog = log.New(lockedWriter{&mu, &errLog}, "", 0)
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		mu.Lock()
		defer mu.Unlock()
		if errLog.Len() > 0 { // net/http reports handler panics here
			t.Errorf("server error log:\n%s", errLog.String())
		}
	})
	return &harness{t: t, srv: srv, ts: ts, audit: audit}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// do sends a request with the harness key and decodes a JSON answer into
// out (when not nil); it returns the status and the response.
func (h *harness) do(method, path, key string, body any, out any) (int, http.Header) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, h.ts.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("%s %s: status %d, body %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, resp.Header
}

// errBody decodes an error answer.
type errBody struct {
	Error apiErrorBody `json:"error"`
}

// solo runs a conversation alone on the library: prompt, then the
// response fed as ids all at once. It is the reference the server's
// verdicts must equal bit for bit.
func solo(t *testing.T, m *guard.Model, p guard.Policy, msgs []tokenizer.Message, respIDs []int) (*guard.PromptVerdict, []guard.TokenVerdict) {
	t.Helper()
	s := m.NewStream()
	defer s.Close()
	if err := s.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	pv, err := s.JudgePrompt(context.Background(), guardhook.Messages[guard.Message](msgs))
	if err != nil {
		t.Fatal(err)
	}
	if respIDs == nil {
		return pv, nil
	}
	tvs, err := s.AppendIDs(context.Background(), respIDs)
	if err != nil {
		t.Fatal(err)
	}
	return pv, tokensOrEmpty(tvs)
}

// sameTokens compares token verdicts exactly (probabilities bitwise).
func sameTokens(t *testing.T, what string, got, want []guard.TokenVerdict) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d verdicts, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Index != w.Index || g.Position != w.Position || g.Risk != w.Risk || g.Category != w.Category ||
			g.NonSafe != w.NonSafe || g.Flagged != w.Flagged || !bitsEqual(g.RiskProbs, w.RiskProbs) || !bitsEqual(g.CategoryProbs, w.CategoryProbs) {
			t.Fatalf("%s: token %d: got %+v\nwant %+v", what, i, g, w)
		}
	}
}

func samePrompt(t *testing.T, what string, got, want *guard.PromptVerdict) {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: prompt verdict %v, want %v", what, got, want)
	}
	if got.Risk != want.Risk || got.Category != want.Category || got.Position != want.Position || got.Flagged != want.Flagged ||
		!bitsEqual(got.RiskProbs, want.RiskProbs) || !bitsEqual(got.CategoryProbs, want.CategoryProbs) {
		t.Fatalf("%s: prompt verdict\ngot  %+v\nwant %+v", what, got, want)
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// twoTenants is a config with keys "key-a" and "key-b".
func twoTenants(edit func(a, b *TenantConfig)) *Config {
	a := TenantConfig{Name: "a", APIKeySHA256: []string{HashKey("key-a")}}
	b := TenantConfig{Name: "b", APIKeySHA256: []string{HashKey("key-b")}}
	if edit != nil {
		edit(&a, &b)
	}
	return &Config{Tenants: []TenantConfig{a, b}}
}
