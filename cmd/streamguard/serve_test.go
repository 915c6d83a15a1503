package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/server"
)

func TestServeHashKeyAndFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runServe([]string{"--hash-key"}, strings.NewReader("sk-tenant-a\n"), &out, &errb); err != nil {
		t.Fatal(err)
	}
	// sha256("sk-tenant-a"), as `printf %s sk-tenant-a | sha256sum` prints it.
	if got := strings.TrimSpace(out.String()); got != "43b53901e1469bd75268ffbc35c6d9927badb376e0b829975797d34235dbc4a7" {
		t.Fatalf("hash %q", got)
	}
	// A key with outer white space could never match: the server reads
	// header values without it.
	for _, key := range []string{" sk-a\n", "sk-a \n", "sk-a\t\n"} {
		if err := runServe([]string{"--hash-key"}, strings.NewReader(key), &out, &errb); err == nil || !strings.Contains(err.Error(), "white space") {
			t.Errorf("--hash-key %q: error %v, want the white space refused", key, err)
		}
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "--model is required"},
		{[]string{"--model", "m", "--kv-budget", "lots"}, "--kv-budget"},
		{[]string{"--model", "m", "--max-body", "0"}, "--max-body"},
		{[]string{"--model", "m", "--chunk-tokens", "0"}, "--chunk-tokens"},
		{[]string{"--model", "m", "extra"}, `unexpected argument "extra"`},
		{[]string{"--model", "m", "--replica-id", "pod-1\r\nX-Injected: 1"}, "--replica-id must not hold control characters"},
		{[]string{"--model", "m", "--allowed-hosts", "guard.internal:8080"}, `--allowed-hosts: "guard.internal:8080" is not a host name`},
		{[]string{"--model", "m", "--allowed-hosts", "a.example,*"}, `--allowed-hosts: "*" is not a host name`},
	} {
		err := runServe(tc.args, strings.NewReader(""), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.msg)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "512MiB": 512 << 20, "2GiB": 2 << 30, "1.5 GiB": 3 << 29, "10KB": 10000, "7B": 7} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "lots", "1XB", "1e30GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// TestHostCheck: serve checks the Host header by default only where
// nothing else guards it from a rebinding web page (no tenants) and only
// this machine can reach it (a loopback address); names given turn it on
// anywhere, "*" turns it off.
func TestHostCheck(t *testing.T) {
	tenants := &server.Config{Tenants: []server.TenantConfig{{Name: "a", APIKeySHA256: []string{server.HashKey("k")}}}}
	for _, c := range []struct {
		flag, addr string
		cfg        *server.Config
		on         bool
		hosts      []string
	}{
		{"", "127.0.0.1:8080", nil, true, nil},
		{"", "127.0.0.2:0", nil, true, nil},
		{"", "[::1]:8080", nil, true, nil},
		{"", "localhost:8080", nil, true, nil},
		// Decided by where net.Listen listens, not by the spelling.
		{"", "LOCALHOST:8080", nil, true, nil},
		{"", "[::ffff:127.0.0.1]:8080", nil, true, nil},
		{"", "[::ffff:0.0.0.0]:8080", nil, true, nil},
		{"", "127.0.0.1:8080", &server.Config{}, true, nil},
		{"", "127.0.0.1:8080", tenants, false, nil},
		// Every address includes loopback (and docker run -p publishes
		// on the host's 127.0.0.1).
		{"", "0.0.0.0:8080", nil, true, nil},
		{"", ":8080", nil, true, nil},
		{"", "[::]:8080", nil, true, nil},
		{"", "0.0.0.0:8080", tenants, false, nil},
		{"", "10.0.0.7:8080", nil, false, nil},
		{"*", "127.0.0.1:8080", nil, false, nil},
		{" guard.internal , .corp.example ", "0.0.0.0:8080", tenants, true, []string{"guard.internal", ".corp.example"}},
	} {
		on, hosts, err := hostCheck(c.flag, c.addr, c.cfg)
		if err != nil || on != c.on || !slices.Equal(hosts, c.hosts) {
			t.Errorf("hostCheck(%q, %q, tenants %v) = %v, %q, %v; want %v, %q", c.flag, c.addr, c.cfg != nil && len(c.cfg.Tenants) > 0, on, hosts, err, c.on, c.hosts)
		}
	}
}

// TestServeStartupText: the startup line counts tenants in words ("1
// tenant") and names the proxy's upstream when --upstream is set, with a
// password in its URL masked.
func TestServeStartupText(t *testing.T) {
	for n, want := range map[int]string{0: "no tenant file: unauthenticated", 1: "1 tenant", 2: "2 tenants"} {
		if got := tenantText(n); got != want {
			t.Errorf("tenantText(%d) = %q, want %q", n, got, want)
		}
	}
	for in, want := range map[string]string{
		"":                                 "",
		"https://api.openai.com":           ", proxy to https://api.openai.com",
		"http://user:secret@10.0.0.7:8000": ", proxy to http://user:xxxxx@10.0.0.7:8000",
	} {
		if got := proxyText(in); got != want {
			t.Errorf("proxyText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestServeJSONReportRedactsUpstream: `serve --json` (the Kubernetes
// base's arguments) masks a password in the --upstream URL of its
// "listening" report, as the text report does (TestServeStartupText): the
// report goes to the pod's logs.
func TestServeJSONReportRedactsUpstream(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if code, _, errs := run(t, "gen-model", "--preset", "tiny", "--seed", "1", "--out", dir); code != 0 {
		t.Fatalf("gen-model: %d %s", code, errs)
	}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := runServe([]string{"--model", dir, "--addr", "127.0.0.1:0", "--json", "--ui=false",
			"--upstream", "http://user:s3cret-upstream@127.0.0.1:9/v1"}, strings.NewReader(""), pw, io.Discard)
		pw.Close()
		errc <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	var rep map[string]any
	if json.Unmarshal([]byte(line), &rep) != nil || rep["event"] != "listening" {
		t.Fatalf("first report %q (%v)", line, err)
	}
	// Stop the server (runServe catches SIGINT while it serves).
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	go io.Copy(io.Discard, pr)
	select {
	case <-errc:
	case <-time.After(30 * time.Second):
		t.Error("serve did not stop on SIGINT")
	}
	if up, _ := rep["upstream"].(string); strings.Contains(up, "s3cret-upstream") {
		t.Errorf("serve --json prints the upstream password in its listening report: upstream %q", up)
	}
}
