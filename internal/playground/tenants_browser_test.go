package playground_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamguard/streamguard/internal/guardtest"
	"github.com/streamguard/streamguard/internal/server"
)

// TestKeyChangeReadsTheOtherTenant: after judging with one tenant's key,
// judging with another tenant's key reads that tenant's /v1/info first, so
// the header, the policy controls (and "Reset to the tenant's policy") and
// the verdict the page shows are the second tenant's: the flagged index
// the API returned for it. The two tenants flag the same conversation at
// different tokens.
func TestKeyChangeReadsTheOtherTenant(t *testing.T) {
	exe := chromium(t)
	ts := twoTenantPlayground(t)

	ctx := headless(t, exe, 2*time.Minute)

	prompt := "Tell me how to hurt someone."
	response := guardtest.Response + " " + evilText + " The end."
	_, looseState := apiRun(t, ts.URL, looseKey, prompt, response)
	_, strictState := apiRun(t, ts.URL, strictKey, prompt, response)
	if looseState.FlaggedIndex == strictState.FlaggedIndex {
		t.Fatalf("both tenants flag at %d: nothing to tell apart", looseState.FlaggedIndex)
	}

	if err := chromedp.Do(ctx,
		judgeInPage(ts.URL, strictKey, prompt, response),
	); err != nil {
		t.Fatal(err)
	}
	// Now the loose tenant's key, and Judge again.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.removeAttribute("data-judged"), true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#key"), looseKey),
		chromedp.Click(chromedp.CSS("#judge")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-judged="true"]`), chromedp.NodeReady),
	); err != nil {
		t.Fatal(err)
	}
	fi, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#decision"), "data-flagged-index"))
	if err != nil {
		t.Fatal(err)
	}
	flaggedIdx := fi.Value
	model, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#model")))
	mode, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('input[name="mode"]:checked').value`))
	if !strings.Contains(model, "tenant loose") || mode != "loose" {
		t.Errorf("judged with the loose tenant's key, the page still shows the other tenant: header %q, mode control %q", model, mode)
	}
	if flaggedIdx != fmt.Sprint(looseState.FlaggedIndex) {
		t.Errorf("judged with the loose tenant's key: the page shows the response flagged at %s, the API (loose tenant) at %d", flaggedIdx, looseState.FlaggedIndex)
	}
}

// TestLinkFromAnotherSiteOpensThePage: an ordinary link to the playground
// on a page of another site (a wiki, a chat, a README) opens the page: the
// browser's navigation says cross-site, and the page is answered to it
// (the API's routes are not: see the server's cross-site tests).
func TestLinkFromAnotherSiteOpensThePage(t *testing.T) {
	exe := chromium(t)
	ts := playgroundServer(t, nil)
	// Another site: the same machine by the name localhost (127.0.0.1 and
	// localhost are different sites to the browser).
	target := ts.URL + "/" // http://127.0.0.1:PORT/
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><a id="go" href="%s">the guard's playground</a>`, target)
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)

	ctx := headless(t, exe, time.Minute)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(otherURL),
		chromedp.WaitVisible(chromedp.CSS("#go")),
		chromedp.Click(chromedp.CSS("#go")),
	); err != nil {
		t.Fatal(err)
	}
	var loc, body string
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		loc, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
		body, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.readyState === "complete" ? (document.querySelector("h1") ? document.querySelector("h1").textContent : document.body.innerText) : ""`))
		if loc == target && body != "" {
			break
		}
	}
	if loc != target || !strings.Contains(body, "streamguard playground") {
		t.Errorf("following a link from %s to the playground at %s: the page shows %.300q", otherURL, loc, body)
	}
}

// twoTenantPlayground serves the playground on the tiny model for two
// tenants, strict and loose, whose keys are strictKey and looseKey.
func twoTenantPlayground(t *testing.T) *httptest.Server {
	return playgroundServer(t, &server.Config{Tenants: []server.TenantConfig{
		{Name: "strict", APIKeySHA256: []string{server.HashKey(strictKey)}, Policy: server.PolicyConfig{Mode: "strict"}},
		{Name: "loose", APIKeySHA256: []string{server.HashKey(looseKey)}, Policy: server.PolicyConfig{Mode: "loose"}},
	}})
}

// playgroundServer serves the playground on the tiny model (cfg nil: no
// tenants) until the test ends.
func playgroundServer(t *testing.T, cfg *server.Config) *httptest.Server {
	srv, err := server.New(server.Options{Model: guardtest.Tiny(t), ModelName: "tiny", Config: cfg, Playground: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close() })
	return ts
}

// headless starts the Chromium at exe with a 1280×900 viewport and returns
// a context for its first tab that ends after limit or with the test.
func headless(t *testing.T, exe string, limit time.Duration) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(bctx, limit)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return ctx
}

// judgeInPage opens the playground at base, enters key (a server with
// tenants asks for one), the conversation and no delay, presses Judge and
// waits until the page has judged it.
func judgeInPage(base, key, prompt, response string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.SetValue(chromedp.CSS("#prompt"), prompt),
		chromedp.SetValue(chromedp.CSS("#response"), response),
		chromedp.SetValue(chromedp.CSS("#delay"), "0"),
		chromedp.Click(chromedp.CSS("#judge")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-judged="true"]`), chromedp.NodeReady),
	)
}
