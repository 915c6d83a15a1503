package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

	code, out, errs = run(t, "moderate", "-h")
	if code != 0 || errs != "" || !strings.Contains(out, "Exit status: 0 nothing flagged, 1 error, 2 usage error, 3 flagged") {
		t.Errorf("moderate -h: exit %d, stderr %q\n%s", code, errs, out)
	}
}

// TestModeratePolicyFlags: --threshold and --block take the model's own
// category names (its config.json), checked once the model is loaded; a
// name it lacks is a usage error (exit 2) that lists the names it has, and
// so are a threshold outside [0, 1] and an empty --prompt. Names that are
// right change the verdicts, for --jsonl too.
func TestModeratePolicyFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const categories = `"Violent", "Sexual Content or Sexual Acts", "Suicide & Self-Harm", "Politically Sensitive Topics", "PII", ` +
		`"Copyright Violation", "Non-violent Illegal Acts", "Unethical Acts", "Jailbreak"`
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--threshold", "Violence=0.6"},
			`streamguard moderate: usage error: --threshold: the model has no category "Violence"; its categories: ` + categories + "\n"},
		{[]string{"--block", "Violent, Jailbreak,Nope"},
			`streamguard moderate: usage error: --block: the model has no category "Nope"; its categories: ` + categories + "\n"},
	} {
		code, out, errs := run(t, append([]string{"moderate", "--model", dir, "--prompt", "Hi"}, c.args...)...)
		if code != 2 || out != "" || errs != c.want {
			t.Errorf("%q: exit %d, stdout %q\n got %q\nwant %q", c.args, code, out, errs, c.want)
		}
	}
	code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "Hi", "--threshold", "Violent=1.5")
	if want := "\nstreamguard moderate: usage error: invalid value \"Violent=1.5\" for flag -threshold: threshold \"Violent=1.5\": want a probability from 0 to 1\n"; code != 2 || out != "" || !strings.HasSuffix(errs, want) {
		t.Errorf("--threshold Violent=1.5: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--prompt", "", "--response", "hi"}, "--prompt is empty: give the user's message"},
		{[]string{"--response", "hi"}, "give --prompt TEXT (and --response TEXT), or --jsonl"},
		{[]string{"--prompt", "hi", "--jsonl"}, "give either --prompt or --jsonl, not both"},
	} {
		code, out, errs := run(t, append([]string{"moderate", "--model", dir}, c.args...)...)
		if want := "streamguard moderate: usage error: " + c.want + "\n"; code != 2 || out != "" || errs != want {
			t.Errorf("%q: exit %d, stdout %q\n got %q\nwant %q", c.args, code, out, errs, want)
		}
	}

	// The diverging response of TestModerateRules is flagged at token 1, a
	// PII verdict. A PII threshold no verdict reaches turns its PII tokens
	// safe, so it is flagged later, at the run of tokens 2 and 3; a block
	// list of two categories none of its tokens has lets it pass (the
	// spaces around the names are trimmed). --jsonl applies them too.
	const diverging = "I gun do I eat me money slowly"
	for _, c := range []struct {
		policy []string
		code   int
		index  int // flagged_index of --jsonl
		line   string
	}{
		{nil, 3, 1, `flagged at token 1 " gun" (online rule: first run of 2 non-safe tokens; Unsafe, PII)`},
		{[]string{"--threshold", "PII=0.999"}, 3, 3, `flagged at token 3 " I" (online rule: first run of 2 non-safe tokens; Unsafe, Politically Sensitive Topics)`},
		{[]string{"--block", "Violent, Jailbreak"}, 0, -1, "not flagged (online rule: no run of 2 non-safe tokens)"},
	} {
		code, out, errs := run(t, append([]string{"moderate", "--model", dir, "--prompt", "Hi", "--response", diverging}, c.policy...)...)
		if code != c.code || errs != "" || !slices.Contains(strings.Split(out, "\n"), c.line) {
			t.Errorf("%q: exit %d, want %d and the line %q; stderr %q\n%s", c.policy, code, c.code, c.line, errs, out)
		}
		moderateStdin = strings.NewReader(`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "` + diverging + `"}]}` + "\n")
		code, out, errs = run(t, append([]string{"moderate", "--model", dir, "--jsonl"}, c.policy...)...)
		moderateStdin = os.Stdin
		var res struct {
			FlaggedIndex *int `json:"flagged_index"`
		}
		if code != c.code || errs != "" || json.Unmarshal([]byte(out), &res) != nil || res.FlaggedIndex == nil || *res.FlaggedIndex != c.index {
			t.Errorf("--jsonl %q: exit %d, want %d and flagged_index %d; stderr %q\n%s", c.policy, code, c.code, c.index, errs, out)
		}
	}
}
