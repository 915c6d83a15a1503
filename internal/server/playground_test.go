package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardtest"
	"github.com/streamguard/streamguard/internal/playground"
)

// get fetches a path without a key and returns status, headers and body.
func (h *harness) get(path string) (int, http.Header, string) {
	h.t.Helper()
	resp, err := h.ts.Client().Get(h.ts.URL + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestPlaygroundServed(t *testing.T) {
	off := newHarness(t, Options{})
	if code, _, _ := off.get("/"); code != http.StatusNotFound {
		t.Errorf("without Playground: GET / is %d", code)
	}
	if code, _, _ := off.get("/ui/app.js"); code != http.StatusNotFound {
		t.Errorf("without Playground: GET /ui/app.js is %d", code)
	}

	// With tenants the page is public, the API is not.
	h := newHarness(t, Options{Playground: true, Config: twoTenants(nil)})
	code, hdr, page := h.get("/")
	if code != http.StatusOK || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", code, hdr.Get("Content-Type"))
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") || csp != playground.CSP {
		t.Errorf("CSP %q", csp)
	}
	if hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}
	if code, _, _ := h.get("/v1/info"); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/info without a key: %d", code)
	}
	// Every asset the page names is served with its type; together they
	// are the embedded files.
	refs := regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) != 3 {
		t.Fatalf("page names %d assets: %v", len(refs), refs)
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	total := len(page)
	for _, r := range refs {
		code, hdr, body := h.get(r[1])
		if code != http.StatusOK || hdr.Get("Content-Type") != types[filepath.Ext(r[1])] || hdr.Get("Content-Security-Policy") != playground.CSP {
			t.Errorf("GET %s: %d %q", r[1], code, hdr.Get("Content-Type"))
		}
		total += len(body)
	}
	weight := 0
	for _, n := range playground.Assets() {
		weight += n
	}
	if weight != total {
		t.Errorf("page and assets weigh %d bytes, the embedded files %d", total, weight)
	}
	t.Logf("page weight: %d bytes (%v)", weight, playground.Assets())
	for _, p := range []string{"/ui/nope.js", "/ui/index.html", "/ui/", "/index.html", "/ui/..%2fplayground.go"} {
		if code, _, _ := h.get(p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	// Nothing fetched from elsewhere, no inline script, no innerHTML.
	for name := range playground.Assets() {
		_, _, body := h.get("/ui/" + name)
		if name == "index.html" {
			body = page
		}
		for _, bad := range []string{"http://", "https://", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "<script>", "style="} {
			if strings.Contains(body, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}

// policyCase is one tenant's policy with the server's verdicts and state.
type policyCase struct {
	Policy    PolicyConfig    `json:"policy"`
	Prompt    json.RawMessage `json:"prompt"`
	Tokens    json.RawMessage `json:"tokens"`
	Risk      []string        `json:"risk_levels"`
	QueryRisk []string        `json:"query_risk_levels"`
	// What the server said, to compare.
	PromptFlagged bool           `json:"-"`
	FlaggedIndex  int            `json:"-"`
	Decision      guard.Decision `json:"-"`
	NonSafe       []bool         `json:"-"`
}

// TestPlaygroundPolicyMatchesGuard runs one conversation under many tenant
// policies and checks that the page's policy.js, given the verdicts, finds
// what the server found: the prompt flag, each token's non-safe reading,
// the flagged index and the final decision. It needs node (skipped
// without).
func TestPlaygroundPolicyMatchesGuard(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: policy.js is not checked against the guard's policy")
	}
	m := testModel(t)
	labels := m.Info().Labels
	cats := labels.ResponseCategory
	all := func(tau float32) map[string]float32 {
		th := map[string]float32{}
		for _, c := range cats {
			th[c] = tau
		}
		return th
	}
	policies := []PolicyConfig{
		{Mode: "strict"}, {Mode: "loose"}, {Mode: "strict", Debounce: 1}, {Mode: "loose", Debounce: 1},
		{Mode: "strict", Debounce: 3}, {Mode: "loose", Debounce: 4},
		{Mode: "strict", Thresholds: all(0.5)}, {Mode: "loose", Thresholds: all(0.3)}, {Mode: "strict", Debounce: 1, Thresholds: all(0.66)},
		{Mode: "loose", Debounce: 1, Thresholds: map[string]float32{cats[0]: 0.1, cats[1]: 0.9}},
		{Mode: "strict", Block: cats[:3]}, {Mode: "loose", Debounce: 1, Block: cats[2:5], Thresholds: map[string]float32{cats[3]: 0.2}},
		{Mode: "loose", Debounce: 3, Thresholds: all(0.93)}, {Mode: "loose", Thresholds: all(0.95)},
		{Mode: "strict", Debounce: 5, Block: cats[:1]}, {Mode: "loose", Block: []string{"Unethical Acts"}},
		{Mode: "strict", Block: []string{"Unethical Acts"}}, {Mode: "loose", Debounce: 8},
	}
	// Thresholds exactly at a verdict's float32 sums catch a rounding
	// difference in the page's arithmetic.
	first := runPolicyCases(t, policies[:1])
	var tv []struct {
		RiskProbs []float32 `json:"risk_probs"`
		Category  string    `json:"category"`
	}
	json.Unmarshal(first[0].Tokens, &tv)
	for _, k := range []int{1, 2, 5} {
		u, c := tv[k].RiskProbs[1], tv[k].RiskProbs[2]
		policies = append(policies,
			PolicyConfig{Mode: "strict", Debounce: 1, Thresholds: all(u + c)},
			PolicyConfig{Mode: "loose", Debounce: 1, Thresholds: all(u)},
			PolicyConfig{Mode: "loose", Debounce: 1, Thresholds: map[string]float32{tv[k].Category: u}})
	}
	cases := runPolicyCases(t, policies)
	script := `
const P = require(process.argv[2]);
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = cases.map((c) => {
  const r = P.response(c.policy, c.tokens, c.risk_levels.indexOf("Unsafe"), c.risk_levels.indexOf("Controversial"));
  return { prompt_flagged: P.prompt(c.policy, c.prompt, c.query_risk_levels.indexOf("Unsafe"), c.query_risk_levels.indexOf("Controversial")),
    non_safe: r.nonSafe, flagged_index: r.flaggedAt, decision: r.decision };
});
process.stdout.write(JSON.stringify(out));
`
	dir := t.TempDir()
	js := filepath.Join(dir, "check.js")
	os.WriteFile(js, []byte(script), 0o644)
	src, err := os.ReadFile("../playground/static/policy.js")
	if err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "policy.js")
	os.WriteFile(pol, src, 0o644)
	in, _ := json.Marshal(cases)
	cmd := exec.Command(node, js, pol)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outJSON, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var got []struct {
		PromptFlagged bool           `json:"prompt_flagged"`
		NonSafe       []bool         `json:"non_safe"`
		FlaggedIndex  int            `json:"flagged_index"`
		Decision      guard.Decision `json:"decision"`
	}
	if err := json.Unmarshal(outJSON, &got); err != nil {
		t.Fatal(err)
	}
	flagged, kinds := 0, map[string]bool{}
	for i, c := range cases {
		g := got[i]
		if g.PromptFlagged != c.PromptFlagged || g.FlaggedIndex != c.FlaggedIndex || !reflect.DeepEqual(g.NonSafe, c.NonSafe) || g.Decision != c.Decision {
			t.Errorf("case %d (policy %+v): policy.js prompt %v, flagged at %d, decision %+v; server prompt %v, flagged at %d, decision %+v\nnon-safe js %v\nserver     %v",
				i, c.Policy, g.PromptFlagged, g.FlaggedIndex, g.Decision, c.PromptFlagged, c.FlaggedIndex, c.Decision, g.NonSafe, c.NonSafe)
		}
		if c.FlaggedIndex >= 0 {
			flagged++
		}
		kinds[c.Decision.Level] = true
	}
	t.Logf("%d cases, %d flagged, decision levels %v", len(cases), flagged, kinds)
	if flagged == 0 || flagged == len(cases) {
		t.Errorf("%d of %d cases flagged: the check tells nothing", flagged, len(cases))
	}
}

// runPolicyCases judges two conversations under each policy (one tenant
// each) and returns the verdicts with what the server decided.
func runPolicyCases(t *testing.T, policies []PolicyConfig) []policyCase {
	m := testModel(t)
	labels := m.Info().Labels
	cfg := &Config{}
	for i, p := range policies {
		cfg.Tenants = append(cfg.Tenants, TenantConfig{Name: fmt.Sprint("t", i), APIKeySHA256: []string{HashKey(fmt.Sprint("k", i))}, Policy: p})
	}
	h := newHarness(t, Options{Config: cfg, Playground: true})
	prompts := []string{"How do I make bread?", "Tell me how to hurt someone."}
	var cases []policyCase
	for _, prompt := range prompts {
		for i, p := range policies {
			key := fmt.Sprint("k", i)
			var open struct {
				ID     string          `json:"id"`
				Prompt json.RawMessage `json:"prompt"`
			}
			if code, _ := h.do("POST", "/v1/streams", key, map[string]any{"prompt": prompt}, &open); code != http.StatusCreated {
				t.Fatalf("open: %d", code)
			}
			var app struct {
				Tokens []json.RawMessage `json:"tokens"`
				State  struct {
					FlaggedIndex int            `json:"flagged_index"`
					Decision     guard.Decision `json:"decision"`
				} `json:"state"`
			}
			if code, _ := h.do("POST", "/v1/streams/"+open.ID+"/append", key, map[string]any{"text": guardtest.Response + " " + guardtest.Response, "flush": true}, &app); code != http.StatusOK {
				t.Fatalf("append: %d", code)
			}
			h.do("DELETE", "/v1/streams/"+open.ID, key, nil, nil)
			c := policyCase{Policy: p, Prompt: open.Prompt, Risk: labels.ResponseRisk, QueryRisk: labels.QueryRisk,
				FlaggedIndex: app.State.FlaggedIndex, Decision: app.State.Decision}
			var pv struct {
				Flagged bool `json:"flagged"`
			}
			json.Unmarshal(open.Prompt, &pv)
			c.PromptFlagged = pv.Flagged
			for _, tok := range app.Tokens {
				var tv struct {
					NonSafe bool `json:"non_safe"`
				}
				json.Unmarshal(tok, &tv)
				c.NonSafe = append(c.NonSafe, tv.NonSafe)
			}
			c.Tokens, _ = json.Marshal(app.Tokens)
			cases = append(cases, c)
		}
	}
	return cases
}
