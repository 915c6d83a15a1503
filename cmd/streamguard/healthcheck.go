package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

func init() {
	register(&command{
		name:    "healthcheck",
		summary: "probe a server's health endpoint: exit 0 when it answers 200, 1 otherwise (for container images without curl)",
		run:     runHealthcheck,
	})
}

// runHealthcheck is a container HEALTHCHECK for images that hold nothing
// but this binary: one GET, no proxy, no redirects followed, a bounded
// wait. Any status but 200 and any failure to get one is unhealthy.
func runHealthcheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", "[--url URL] [--timeout D]", stderr)
	target := fs.String("url", "http://127.0.0.1:8080/healthz", "URL to GET (the server's /healthz, or /readyz for readiness)")
	timeout := fs.Duration("timeout", 3*time.Second, "longest wait for the answer")
	quiet := fs.Bool("quiet", false, "print nothing when healthy")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	u, err := url.Parse(*target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("--url: want an http:// or https:// URL, got %q", *target)
	}
	if *timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	client := &http.Client{
		// The probe is about this server, never about a proxy the
		// environment names; a redirect is an answer, not a hop to take.
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s: %q", u, resp.Status, body)
	}
	if !*quiet {
		fmt.Fprintf(stdout, "healthy: %s answered %s\n", u, resp.Status)
	}
	return nil
}
