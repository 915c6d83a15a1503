package server

import (
	"net/http"
	"testing"
)

// TestPlaygroundNavigationFromOtherSite: a link to the playground on
// another site's page opens it (a browser's top-level navigation to GET /:
// Sec-Fetch-Site cross-site, Sec-Fetch-Mode navigate, Sec-Fetch-Dest
// document, no Origin), while a cross-site navigation to an API route,
// another method, or a cross-site fetch of the page is still refused.
func TestPlaygroundNavigationFromOtherSite(t *testing.T) {
	h := newHarness(t, Options{Playground: true})
	req, _ := http.NewRequest("GET", h.ts.URL+"/", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-Dest", "document")
	req.Header.Set("Sec-Fetch-User", "?1")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("link to the playground from another site: GET / is %d %q, want the page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, c := range []struct{ method, path, mode, dest string }{
		{"GET", "/v1/info", "navigate", "document"},
		{"POST", "/", "navigate", "document"},
		{"GET", "/", "cors", "empty"},
		{"GET", "/", "navigate", "iframe"},
		{"GET", "/ui/app.js", "navigate", "document"},
	} {
		req, _ := http.NewRequest(c.method, h.ts.URL+c.path, nil)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Sec-Fetch-Mode", c.mode)
		req.Header.Set("Sec-Fetch-Dest", c.dest)
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site %s %s (mode %s, dest %s): %d, want 403", c.method, c.path, c.mode, c.dest, resp.StatusCode)
		}
	}
}
