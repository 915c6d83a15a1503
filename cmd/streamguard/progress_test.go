package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProgressTo(t *testing.T) {
	var buf bytes.Buffer
	if w := progressTo(&buf, false); w != nil {
		t.Errorf("a buffer is not a terminal, got %v", w)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	if isTerminal(devNull) {
		t.Errorf("%s taken for a terminal", os.DevNull)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe taken for a terminal")
	}
	fakeTerminal(t)
	if got := progressTo(&buf, false); got != &buf {
		t.Errorf("terminal: got %v, want stderr", got)
	}
	if got := progressTo(&buf, true); got != nil {
		t.Errorf("terminal with --json/--quiet: got %v, want nil", got)
	}
}

func TestByteBar(t *testing.T) {
	var buf bytes.Buffer
	b := newByteBar(&buf, "gen-model: writing", 1<<30)
	t0 := b.start
	clock := t0
	b.now = func() time.Time { return clock }
	b.set(1 << 28)
	if buf.Len() != 0 {
		t.Fatalf("drawn before %v: %q", progressDelay, buf.String())
	}
	clock = t0.Add(2 * time.Second)
	b.set(1 << 29)
	b.set(1 << 29) // within the redraw interval: nothing
	want := "\rgen-model: writing  50% 0.50/1.00 GiB, 256 MiB/s, 2s left\x1b[K"
	if buf.String() != want {
		t.Fatalf("got %q\nwant %q", buf.String(), want)
	}
	b.finish()
	if buf.String() != want+"\r\x1b[K" {
		t.Errorf("finish: %q", buf.String())
	}
	var nilBar *byteBar
	nilBar.set(1)
	nilBar.finish()
}

// TestLongWorkProgress checks gen-model and bench: a bar or stage line on a
// terminal, nothing when stderr is not one or with --json.
func TestLongWorkProgress(t *testing.T) {
	base := t.TempDir()
	bench := []string{"bench", "--preset", "tiny", "--dtype", "f32", "--pp", "16", "--positions", "10", "--streams", "2", "--steps", "1"}

	code, _, errs := run(t, "gen-model", "--preset", "tiny", "--out", filepath.Join(base, "a"))
	if code != 0 || errs != "" {
		t.Errorf("gen-model, not a terminal: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, bench...)
	if code != 0 || errs != "" {
		t.Errorf("bench, not a terminal: exit %d, stderr %q", code, errs)
	}

	fakeTerminal(t)
	old := progressDelay
	progressDelay = 0
	t.Cleanup(func() { progressDelay = old })
	code, out, errs := run(t, "gen-model", "--preset", "tiny", "--out", filepath.Join(base, "b"))
	if code != 0 || !strings.HasPrefix(errs, "\rgen-model: writing ") || !strings.HasSuffix(errs, "\r\x1b[K") || !strings.HasPrefix(out, "wrote ") {
		t.Errorf("gen-model on a terminal: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, "gen-model", "--preset", "tiny", "--out", filepath.Join(base, "c"), "--json")
	if code != 0 || errs != "" {
		t.Errorf("gen-model --json on a terminal: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, bench...)
	want := "\rbench: loading the model\x1b[K" +
		"\rbench: warm-up prefill of 16 tokens (1/6)\x1b[K" +
		"\rbench: prefill of 16 tokens (2/6)\x1b[K" +
		"\rbench: read bandwidth (3/6)\x1b[K" +
		"\rbench: decode at position 10 (4/6)\x1b[K" +
		"\rbench: read bandwidth again (5/6)\x1b[K" +
		"\rbench: 2 streams batched (6/6)\x1b[K" +
		"\r\x1b[K"
	if code != 0 || errs != want {
		t.Errorf("bench on a terminal: exit %d\n got %q\nwant %q", code, errs, want)
	}
	code, _, errs = run(t, append(bench, "--json")...)
	if code != 0 || errs != "" {
		t.Errorf("bench --json on a terminal: exit %d, stderr %q", code, errs)
	}
}

// TestBenchPositionMessage: the error names no internal package.
func TestBenchPositionMessage(t *testing.T) {
	code, _, errs := run(t, "bench", "--preset", "tiny", "--dtype", "f32", "--positions", "100000")
	if want := "streamguard bench: position 100000 plus 8 steps exceeds the model's 8192 positions\n"; code != 1 || errs != want {
		t.Errorf("exit %d\n got %q\nwant %q", code, errs, want)
	}
}
