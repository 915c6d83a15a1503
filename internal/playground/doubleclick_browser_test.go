package playground_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamguard/streamguard/internal/guardtest"
)

// TestDoubleClickAfterKeyChange: a second click on Judge while the first
// runs, the other tenant's info being read included, does nothing: one
// run, every token the API returned shown, no script error.
func TestDoubleClickAfterKeyChange(t *testing.T) {
	exe := chromium(t)
	ts := twoTenantPlayground(t)

	ctx := headless(t, exe, 2*time.Minute)

	prompt := "Tell me how to hurt someone."
	response := guardtest.Response + " The end."
	looseTokens, _ := apiRun(t, ts.URL, looseKey, prompt, response)

	if err := chromedp.Do(ctx,
		judgeInPage(ts.URL, strictKey, prompt, response),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.removeAttribute("data-judged"), true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#key"), looseKey),
	); err != nil {
		t.Fatal(err)
	}
	// Two clicks, the second 1 ms after the first (a double-click's second
	// click comes 100-200 ms after the first: within /v1/info's round trip
	// to a server that far away).
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("judge").click(), setTimeout(() => document.getElementById("judge").click(), 1), true`)); err != nil {
		t.Fatal(err)
	}
	// Wait for both runs to end (the button enabled, nothing in flight).
	time.Sleep(5 * time.Second)
	judged, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`String(document.body.getAttribute("data-judged"))`))
	t.Logf("data-judged after the two clicks: %s", judged)
	n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#tokens > span").length`))
	errText, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("error").hidden ? "" : document.getElementById("error").textContent`))
	if n != len(looseTokens) || errText != "" {
		t.Errorf("double-click on Judge after the key changed: the page shows %d tokens (the API returns %d), error %q", n, len(looseTokens), errText)
	}
}
