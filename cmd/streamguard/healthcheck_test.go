package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(status)
			w.Write([]byte("ok\n"))
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := mainWithArgs(append([]string{"healthcheck"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	if code, out, errs := run("--url", ts.URL+"/healthz"); code != 0 || !strings.Contains(out, "200 OK") || errs != "" {
		t.Fatalf("healthy server: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, out, _ := run("--quiet", "--url", ts.URL+"/healthz"); code != 0 || out != "" {
		t.Fatalf("--quiet: exit %d, stdout %q", code, out)
	}
	status = http.StatusServiceUnavailable
	if code, _, errs := run("--url", ts.URL+"/healthz"); code != 1 || !strings.Contains(errs, "503") {
		t.Fatalf("503: exit %d, stderr %q", code, errs)
	}
	// A redirect is not followed: only a 200 from the URL itself is healthy.
	if code, _, errs := run("--url", ts.URL+"/moved"); code != 1 || !strings.Contains(errs, "302") {
		t.Fatalf("redirect: exit %d, stderr %q", code, errs)
	}
	start := time.Now()
	if code, _, errs := run("--timeout", "100ms", "--url", ts.URL+"/slow"); code != 1 || !strings.Contains(errs, "unhealthy") {
		t.Fatalf("slow server: exit %d, stderr %q", code, errs)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("--timeout 100ms took %v", d)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	url := closed.URL
	closed.Close()
	if code, _, errs := run("--url", url+"/healthz"); code != 1 || !strings.Contains(errs, "unhealthy") {
		t.Fatalf("nothing listening: exit %d, stderr %q", code, errs)
	}
	for _, bad := range [][]string{{"--url", "127.0.0.1:8080/healthz"}, {"--url", "ftp://x/healthz"}, {"--timeout", "0s"}, {"extra"}} {
		if code, _, _ := run(bad...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", bad, code)
		}
	}
}
