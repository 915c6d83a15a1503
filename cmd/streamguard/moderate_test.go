package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestModerateRules checks the exit status of moderate (0 nothing flagged,
// 3 flagged, for one conversation and for --jsonl) and that its "flagged at"
// and "decision" lines name their rule and explain where they differ, on a
// tiny random model whose verdicts these texts were picked for.
func TestModerateRules(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const (
		diverging = "I gun do I eat me money slowly"     // C U C U U ...: online flag at 1, final rule at 4
		clean     = "knife gun do I go knife help knife" // no run of 2 non-safe tokens
	)
	lines := func(out string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(out, "\n") {
			m[l] = true
		}
		return m
	}

	code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", diverging)
	got := lines(out)
	for _, want := range []string{
		"prompt: Safe 0.97", // no category for a Safe verdict
		`flagged at token 1 " gun" (online rule: first run of 2 non-safe tokens; Unsafe, PII)`,
		"decision: Unsafe (final rule: first run of 2 Unsafe tokens, ending at token 4, category PII; 8 tokens judged)",
		"note: the final rule prefers a run of Unsafe tokens to the earlier run that flagged the stream, so it names token 4, not 1",
	} {
		if !got[want] {
			t.Errorf("moderate: no line %q", want)
		}
	}
	if code != 3 || errs != "" {
		t.Errorf("moderate flagged: exit %d, stderr %q, want 3 and nothing", code, errs)
	}
	if t.Failed() {
		t.Fatalf("output:\n%s", out)
	}

	// Loose mode counts only the Unsafe tokens: both rules name token 4.
	code, out, _ = run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", diverging, "--mode", "loose")
	got = lines(out)
	if code != 3 || !got[`flagged at token 4 " eat" (online rule: first run of 2 non-safe tokens; Unsafe, PII)`] ||
		!got["decision: Unsafe (final rule: first run of 2 Unsafe tokens, ending at token 4, category PII; 8 tokens judged)"] ||
		strings.Contains(out, "note:") {
		t.Errorf("moderate --mode loose: exit %d\n%s", code, out)
	}

	code, out, _ = run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", clean)
	got = lines(out)
	if code != 0 || !got["not flagged (online rule: no run of 2 non-safe tokens)"] ||
		!got["decision: Safe (final rule: no run of 2 non-safe tokens; 8 tokens judged)"] {
		t.Errorf("moderate clean: exit %d\n%s", code, out)
	}
	// A Safe token shows no category: its row reads "- -" where a category
	// and its probability would be.
	if !regexp.MustCompile(`(?m)^\d+ +"[^"]*" +Safe +\S+ +- +-`).MatchString(out) {
		t.Errorf("moderate clean: no '-' category for Safe tokens\n%s", out)
	}
	code, _, _ = run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", clean, "--json")
	if code != 0 {
		t.Errorf("moderate clean --json: exit %d, want 0", code)
	}
	code, _, _ = run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", diverging, "--json")
	if code != 3 {
		t.Errorf("moderate flagged --json: exit %d, want 3", code)
	}

	jsonl := func(texts ...string) int {
		var in strings.Builder
		for _, s := range texts {
			in.WriteString(`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "` + s + `"}]}` + "\n")
		}
		moderateStdin = strings.NewReader(in.String())
		defer func() { moderateStdin = os.Stdin }()
		code, _, _ := run(t, "moderate", "--model", dir, "--jsonl")
		return code
	}
	if c := jsonl(clean, clean); c != 0 {
		t.Errorf("--jsonl, nothing flagged: exit %d, want 0", c)
	}
	if c := jsonl(clean, diverging); c != 3 {
		t.Errorf("--jsonl, one line flagged: exit %d, want 3", c)
	}

	code, _, errs = run(t, "moderate", "-h")
	if code != 0 || !strings.Contains(errs, "Exit status: 0 nothing flagged, 1 error, 2 usage error, 3 flagged") {
		t.Errorf("moderate -h: exit %d\n%s", code, errs)
	}
}
