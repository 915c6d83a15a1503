package extproc

import (
	"net/http"
	"path"
	"strings"
)

// route is what a request is to the service, in increasing order of
// caution.
type route int

const (
	otherRoute  route = iota // passes untouched
	chatRoute                // POST …/chat/completions: judged
	respRoute                // POST …/responses: judged as the Responses API
	legacyRoute              // POST …/completions: generates text the guard cannot judge
	mixedRoute               // read as chat by some upstreams, as responses by others, or a path with control characters: refused
	storedRoute              // …/responses/{id}, …/chat/completions/{id}, their lists: stored answers, read past the guard: refused
)

// routeOf classifies a request by its method and :path as the upstream
// will route it, not as the path is spelt: upstreams percent-decode the
// path before routing (uvicorn, hence vLLM and LiteLLM) and some merge
// slashes or drop ";" parameters, so "/v1/chat/completion%73" and
// "/v1//chat/completions" reach their chat route, and llama.cpp and
// LiteLLM serve "/chat/completions" without "/v1". Where readings differ,
// the most cautious wins: a needless judgment beats an unjudged answer,
// and a path read as the chat API by one upstream and the Responses API
// by another is refused (its body would be judged as one API and read as
// the other).
//
// A path with a control character is refused: Starlette's route patterns
// match before a final "\n" (…/responses%0A is the Responses API to vLLM).
// Stored answers are refused too — any request under …/responses/ or
// …/chat/completions/, and any but a POST to …/responses or
// …/chat/completions (OpenAI's lists): the upstream keeps the whole
// answer, the part a cut withheld included.
func routeOf(method, rawPath string) route {
	if i := strings.IndexAny(rawPath, "?#"); i >= 0 {
		rawPath = rawPath[:i]
	}
	p := normalizePath(rawPath)
	// A "?" or "#" that came percent-encoded is part of the path to an
	// upstream that decodes once, the start of a query to one that
	// decodes and parses again: both readings count.
	readings := []string{p}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		readings = append(readings, normalizePath(p[:i]))
	}
	post := strings.EqualFold(method, http.MethodPost)
	for _, q := range readings {
		if strings.IndexFunc(q, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			return mixedRoute
		}
		if stored(q) || !post && (strings.HasSuffix(q, "/responses") || strings.HasSuffix(q, "/chat/completions")) {
			return storedRoute
		}
	}
	if !post {
		return otherRoute
	}
	r := classify(readings[0])
	if len(readings) > 1 {
		r2 := classify(readings[1])
		if r != r2 && min(r, r2) == chatRoute && max(r, r2) == respRoute {
			return mixedRoute
		}
		r = max(r, r2)
	}
	return r
}

func classify(p string) route {
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return chatRoute
	case strings.HasSuffix(p, "/completions"):
		return legacyRoute
	case strings.HasSuffix(p, "/responses"):
		return respRoute
	}
	return otherRoute
}

// normalizePath is a path (no query) percent-decoded until nothing is
// left to decode (a double encoding is seen through too), with
// backslashes as slashes, each segment's ";" parameters dropped,
// repeated slashes merged, dot segments resolved, no trailing slash, in
// lower case.
func normalizePath(p string) string {
	for range 8 {
		d := unescape(p)
		if d == p {
			break
		}
		p = d
	}
	segs := strings.Split(strings.ReplaceAll(p, "\\", "/"), "/")
	for i, seg := range segs {
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			segs[i] = seg[:j]
		}
	}
	return strings.ToLower(path.Clean("/" + strings.Join(segs, "/")))
}

// unescape decodes the valid %XX escapes of s and leaves the rest as it
// is (url.PathUnescape fails on the first invalid one).
func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// stored reports a path under a route of stored answers.
func stored(p string) bool {
	return strings.Contains(p, "/responses/") || strings.Contains(p, "/chat/completions/")
}
