package hub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHubErrorMessagesArePrintable: the message of a hub error (its
// X-Error-Message, or the body's {"error"} or first line) comes from the
// server and is printed on a terminal: it is kept as one line of printable
// text, bounded.
func TestHubErrorMessagesArePrintable(t *testing.T) {
	long := strings.Repeat("é", 300) // 600 bytes
	for body, want := range map[string]string{
		`{"error":"Repository not found"}`:                                  "Repository not found",
		`{"error":"Repository Not Found.\nPlease make sure\tit exists.\n"}`: "Repository Not Found. Please make sure it exists.",
		`{"error":"\u001b]0;pwned\u0007\u001b[2Jgone"}`:                     "]0;pwned [2Jgone",
		`{"error":"abc\u202edcba"}`:                                         "abc dcba",
		`{"error":"` + long + `"}`:                                          strings.Repeat("é", 250) + "…",
		"Bad gateway\r\nmore":                                               "Bad gateway",
		"\x1b[31mred\x9b\xff":                                               "[31mred\ufffd\ufffd",
		"<html>":                                                            "",
	} {
		if got := errorBodyMessage([]byte(body)); got != want {
			t.Errorf("errorBodyMessage(%q) = %q, want %q", body, got, want)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Go's client refuses ASCII controls in a header, not these.
		w.Header().Set("X-Error-Code", "Repo\u2028NotFound")
		w.Header().Set("X-Error-Message", "gone\u009b2J\u202e!")
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	c := NewClient(Env{Endpoint: srv.URL, CacheDir: t.TempDir()})
	_, err := c.RepoInfo(context.Background(), Ref{Repo: "o/m", Revision: "main"})
	var he *HTTPError
	if !errors.As(err, &he) || he.Code != "Repo NotFound" || he.Message != "gone 2J !" {
		t.Errorf("err = %v, want code %q, message %q", err, "Repo NotFound", "gone 2J !")
	}
}
