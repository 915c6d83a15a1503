package playground_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/eval"
	"github.com/streamguard/streamguard/internal/guardtest"
	"github.com/streamguard/streamguard/internal/synth"
)

// chromium finds a Chromium to drive: $CHROMIUM, else the usual names.
func chromium(t *testing.T) string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("browser test SKIPPED: no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome); the playground was not checked in a browser")
	return ""
}

// screenshotDir is where screenshots go: $STREAMGUARD_SCREENSHOTS (the
// docs use docs/img, from the repository root) or a temporary folder.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("STREAMGUARD_SCREENSHOTS"); d != "" {
		if !filepath.IsAbs(d) {
			d = filepath.Join("..", "..", d) // the test runs in internal/playground
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

const (
	strictKey = "sk-browser-strict"
	looseKey  = "sk-browser-loose"
	// evilText must show as text, never become an element.
	evilText = `<img src=x id=pwned onerror="document.title='pwned'">`
)

// apiRun judges a conversation through the API as one append (verdicts do
// not depend on chunking) and returns the tokens and the final state.
type apiToken struct {
	Text    string `json:"text"`
	Risk    string `json:"risk"`
	Flagged bool   `json:"flagged"`
}

type apiState struct {
	FlaggedIndex int            `json:"flagged_index"`
	Decision     guard.Decision `json:"decision"`
}

func apiRun(t *testing.T, base, key, prompt, response string) ([]apiToken, apiState) {
	t.Helper()
	call := func(method, path string, body any, out any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var open struct {
		ID string `json:"id"`
	}
	call("POST", "/v1/streams", map[string]any{"prompt": prompt}, &open)
	var app struct {
		Tokens []apiToken `json:"tokens"`
		State  apiState   `json:"state"`
	}
	call("POST", "/v1/streams/"+open.ID+"/append", map[string]any{"text": response, "flush": true}, &app)
	call("DELETE", "/v1/streams/"+open.ID, nil, nil)
	return app.Tokens, app.State
}

// pageToken is a token as the page rendered it.
type pageToken struct {
	Index   int    `json:"index"`
	Text    string `json:"text"`
	Level   string `json:"level"`
	Flagged bool   `json:"flagged"`
	NonSafe bool   `json:"ns"`
}

const readTokens = `Array.from(document.querySelectorAll("#tokens > span")).map((s) => ({
  index: Number(s.dataset.index), text: s.textContent, level: s.dataset.level,
  flagged: s.dataset.flagged === "true", ns: s.classList.contains("ns")}))`

// TestPlaygroundInBrowser opens the playground in headless Chromium on a
// server with the tiny model (two tenants: strict and loose), judges a
// conversation, and checks the page against the API: every token rendered
// with the level the API returned, the flagged marker on the flagged
// token, and loose mode giving what a loose tenant's stream gives. It
// saves phone and desktop screenshots and renders the eval report.
func TestPlaygroundInBrowser(t *testing.T) {
	exe := chromium(t)
	ts := twoTenantPlayground(t)
	shots := screenshotDir(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"), chromedp.Flag("hide-scrollbars", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first call starts the browser, and it lives as long as that
	// call's context: no timeout on it; on the later calls one.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	ctx, cancelT := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelT()
	eval1 := func(expr string, out any) {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if err := json.Unmarshal(v, out); err != nil {
			t.Fatalf("%s: %s: %v", expr, v, err)
		}
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatalf("%s[%s]: %v", sel, name, err)
		}
		return v.Value
	}

	// This prompt and response give, on the tiny model, a strict flag (a
	// Controversial then Unsafe run) earlier than the loose one.
	prompt := "Tell me how to hurt someone."
	response := guardtest.Response + " " + evilText + " The end."
	start := time.Now()
	if err := chromedp.Do(ctx,
		judgeInPage(ts.URL, strictKey, prompt, response),
	); err != nil {
		t.Fatalf("judging in the page: %v", err)
	}
	modelText, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#model")))
	t.Logf("the page judged the conversation in %v (%s)", time.Since(start).Round(time.Millisecond), modelText)

	strictTokens, strictState := apiRun(t, ts.URL, strictKey, prompt, response)
	looseTokens, looseState := apiRun(t, ts.URL, looseKey, prompt, response)
	var got []pageToken
	eval1(readTokens, &got)
	var imgs int
	eval1(`document.querySelectorAll("#pwned, #tokens img").length`, &imgs)
	title, _ := chromedp.Run(ctx, chromedp.Title())
	t.Logf("time to the first verdict (the prompt's), in the page: %s ms", attr("#timing", "data-first-verdict-ms"))
	checkTokens(t, "strict", got, strictTokens, strictState.FlaggedIndex)
	if f := attr("#decision", "data-flagged-index"); f != fmt.Sprint(strictState.FlaggedIndex) {
		t.Errorf("strict: the page says flagged at %s, the API at %d", f, strictState.FlaggedIndex)
	}
	var d guard.Decision
	if js := attr("#decision", "data-decision"); json.Unmarshal([]byte(js), &d) != nil || d != strictState.Decision {
		t.Errorf("strict decision: page %s, API %+v", js, strictState.Decision)
	}
	var text strings.Builder
	for _, tk := range got {
		text.WriteString(tk.Text)
	}
	if imgs != 0 || title == "pwned" || !strings.Contains(text.String(), evilText) {
		t.Errorf("the response's markup was not shown as text: %d elements, title %q", imgs, title)
	}
	desktop, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	writeShot(t, shots, "playground-desktop.png", desktop)

	// Loose mode, re-applied in the page: what a loose tenant's stream says.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[name="mode"][value="loose"]`))); err != nil {
		t.Fatal(err)
	}
	eval1(readTokens, &got)
	checkTokens(t, "loose", got, looseTokens, looseState.FlaggedIndex)
	if f := attr("#decision", "data-flagged-index"); f != fmt.Sprint(looseState.FlaggedIndex) {
		t.Errorf("loose: the page says flagged at %s, the API at %d", f, looseState.FlaggedIndex)
	}
	if js := attr("#decision", "data-decision"); json.Unmarshal([]byte(js), &d) != nil || d != looseState.Decision {
		t.Errorf("loose decision: page %s, API %+v", js, looseState.Decision)
	}
	t.Logf("strict: flagged at %d, decision %+v; loose: flagged at %d, decision %+v", strictState.FlaggedIndex, strictState.Decision, looseState.FlaggedIndex, looseState.Decision)
	if strictState.FlaggedIndex == looseState.FlaggedIndex {
		t.Errorf("the conversation flags at %d in both modes: switching modes is not checked", looseState.FlaggedIndex)
	}

	// Download JSON: the conversation, the verdicts and the page's decision.
	var zero int
	eval1(`window.sgBlobs = []; { const o = URL.createObjectURL; URL.createObjectURL = (b) => { window.sgBlobs.push(b); return o(b); }; } 0`, &zero)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#download"))); err != nil {
		t.Fatal(err)
	}
	saved, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.sgBlobs[0].text()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	var dl struct {
		Conversation struct {
			Prompt, Response string
		} `json:"conversation"`
		Policy struct {
			Mode string `json:"mode"`
		} `json:"policy"`
		Tokens       []apiToken     `json:"tokens"`
		FlaggedIndex int            `json:"flagged_index"`
		Decision     guard.Decision `json:"decision"`
	}
	if err := json.Unmarshal([]byte(saved), &dl); err != nil {
		t.Fatalf("download: %v: %.200s", err, saved)
	}
	if dl.Conversation.Prompt != prompt || dl.Conversation.Response != response || dl.Policy.Mode != "loose" ||
		len(dl.Tokens) != len(looseTokens) || dl.FlaggedIndex != looseState.FlaggedIndex || dl.Decision != looseState.Decision {
		t.Errorf("download: %.300s", saved)
	}

	// Phone width, back in strict mode, the flagged token reached from the
	// keyboard.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[name="mode"][value="strict"]`)),
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Focus(chromedp.CSS(`#tokens > span[data-index="0"]`)),
		chromedp.KeyEvent("f"),
	); err != nil {
		t.Fatal(err)
	}
	detail, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#detail")))
	if strictState.FlaggedIndex >= 0 && !strings.Contains(detail, fmt.Sprintf("Token #%d", strictState.FlaggedIndex)) {
		t.Errorf("keyboard: f did not move to the flagged token; detail %q", detail)
	}
	var overflow bool
	eval1(`document.documentElement.scrollWidth > window.innerWidth + 1`, &overflow)
	if overflow {
		t.Error("at phone width the page scrolls sideways")
	}
	if err := chromedp.Do(ctx, chromedp.ScrollIntoView(chromedp.CSS("#h-output"))); err != nil {
		t.Fatal(err)
	}
	phone, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	writeShot(t, shots, "playground-phone.png", phone)

	// The eval report, rendered by the browser: no script, the numbers
	// are there.
	items, err := readShipped()
	if err != nil {
		t.Fatal(err)
	}
	// The model of the eval docs' example (gen-model --preset tiny --dtype
	// bf16 --seed 1): in loose mode it misses responses, whose tokens the
	// report highlights.
	em := evalModel(t)
	preds, err := eval.Run(context.Background(), em, items, eval.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := em.Info().Labels
	rep, err := eval.Score(items, preds, guard.Loose, l.QueryCategory, l.ResponseCategory)
	if err != nil {
		t.Fatal(err)
	}
	rep.Data, rep.Model, rep.Debounce = "testdata/eval/synthetic.jsonl", "tiny (gen-model --seed 1)", 2
	rep.Throughput = eval.Throughput{Items: len(items), Tokens: 2052, Seconds: 0.4, TokensPerSecond: 5130, ItemsPerSecond: 95}
	page := filepath.Join(t.TempDir(), "report.html")
	var buf bytes.Buffer
	if err := rep.WriteHTML(&buf, items); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1100, 900),
		chromedp.Navigate("file://"+page),
		chromedp.WaitVisible(chromedp.CSS("#scores")),
	); err != nil {
		t.Fatal(err)
	}
	var scripts, metrics int
	eval1(`document.scripts.length`, &scripts)
	eval1(`document.querySelectorAll("[data-metric]").length`, &metrics)
	f1 := attr(`[data-metric="response.loose.f1"]`, "data-value")
	if scripts != 0 || metrics < 40 || f1 != strconv.FormatFloat(rep.Response.Loose.F1, 'g', -1, 64) {
		t.Errorf("eval report in the browser: %d scripts, %d metrics, response loose F1 %s want %v", scripts, metrics, f1, rep.Response.Loose.F1)
	}
	report, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	writeShot(t, shots, "eval-report.png", report)
	var highlighted int
	eval1(`document.querySelectorAll('[data-miss="response"] span[data-level]').length`, &highlighted)
	if highlighted == 0 {
		t.Fatal("the report shows no highlighted response miss")
	}
	if err := chromedp.Do(ctx, chromedp.ScrollIntoView(chromedp.CSS(`[data-miss="response"]`))); err != nil {
		t.Fatal(err)
	}
	misses, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	writeShot(t, shots, "eval-misses.png", misses)
}

// evalModel is gen-model --preset tiny --dtype bf16 --seed 1, loaded.
func evalModel(t *testing.T) *guard.Model {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func checkTokens(t *testing.T, mode string, got []pageToken, want []apiToken, flagged int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: the page shows %d tokens, the API judged %d", mode, len(got), len(want))
	}
	marks := 0
	for i, w := range want {
		g := got[i]
		if g.Index != i || g.Text != w.Text || g.Level != w.Risk {
			t.Errorf("%s: token %d: page %+v, API %q %s", mode, i, g, w.Text, w.Risk)
		}
		if g.Flagged {
			marks++
			if i != flagged {
				t.Errorf("%s: flag marker on token %d, the API flagged %d", mode, i, flagged)
			}
		}
		if w.Flagged != (i == flagged) {
			t.Errorf("%s: API token %d flagged %v, state flagged_index %d", mode, i, w.Flagged, flagged)
		}
	}
	if want := min(1, flagged+1); marks != want {
		t.Errorf("%s: %d flag markers, want %d", mode, marks, want)
	}
}

func writeShot(t *testing.T, dir, name string, png []byte) {
	t.Helper()
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("%s: not a screenshot (%d bytes)", name, len(png))
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("screenshot %s: %d bytes", filepath.Join(dir, name), len(png))
}

func readShipped() ([]eval.Item, error) {
	const path = "../../testdata/eval/synthetic.jsonl"
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return eval.ReadItems(f, path)
}
