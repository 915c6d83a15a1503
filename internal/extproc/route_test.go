package extproc

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzRouteOf checks the path reading behind which requests are judged:
// it never panics; normalising is idempotent (a normalised path reads as
// itself, so no spelling survives one pass to be read differently by an
// upstream that decodes again); and percent-encoding the path's bytes,
// once or twice, never changes a request's route, since upstreams decode
// before routing.
func FuzzRouteOf(f *testing.F) {
	for _, p := range []string{"/v1/chat/completions", "/v1/chat/completion%73", "/v1//chat/./completions/", "/chat/completions?x=1",
		"/v1/completions", "/v1/responses", "/v1/chat/%2563ompletions", "/a/..%2f../v1/chat/completions;x", "/v1/models", "\\v1\\chat\\completions", "%"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if len(p) > 512 {
			return
		}
		n := normalizePath(p)
		if m := normalizePath(n); m != n {
			t.Fatalf("normalizePath(%q) = %q, again %q", p, n, m)
		}
		path, _, _ := strings.Cut(p, "?")
		path, _, _ = strings.Cut(path, "#")
		want := routeOf("POST", path)
		once := encodeAll(path)
		for _, q := range []string{once, encodeAll(once)} {
			if got := routeOf("POST", q); got != want {
				t.Fatalf("routeOf(%q) = %d, encoded %q: %d", path, want, q, got)
			}
		}
		if r := routeOf("GET", p); r != otherRoute && r != storedRoute && r != mixedRoute {
			t.Fatalf("a GET of %q is routed as %d", p, r)
		}
	})
}

// encodeAll percent-encodes every byte but the slashes.
func encodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			b.WriteByte('/')
			continue
		}
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}
