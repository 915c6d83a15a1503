// Package playground is the browser page `streamguard serve` shows at /:
// enter a prompt, type or paste a response, and watch the guard judge it
// token by token through the streaming API; the policy (mode, debounce,
// per-category thresholds, block list) can be changed and re-applied in the
// page to the same verdicts without running the model again.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: no
// build step, no CDN, nothing fetched from elsewhere; it works offline. It
// holds no data: with tenants it asks for a key and sends it as
// Authorization on its API calls, so the page itself may be public.
package playground

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of the page and its assets: its own
// scripts, styles and API only; no inline script, no framing.
const CSP = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"

// contentTypes are the asset types served (anything else is not served).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Assets lists the embedded files (names relative to static/) and their
// sizes in bytes: the page weight.
func Assets() map[string]int {
	out := map[string]int{}
	fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := static.ReadFile(p); err == nil {
				out[strings.TrimPrefix(p, "static/")] = len(b)
			}
		}
		return nil
	})
	return out
}

// Register adds GET / (the page) and GET /ui/{file} (its assets) to mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serve(w, "index.html") })
	mux.HandleFunc("GET /ui/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "index.html" || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		serve(w, name)
	})
}

func serve(w http.ResponseWriter, name string) {
	ct, ok := contentTypes[path.Ext(name)]
	b, err := static.ReadFile("static/" + name)
	if !ok || err != nil {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("404 page not found\n"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
}
