package main

import (
	"bytes"
	"strings"
	"testing"
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
