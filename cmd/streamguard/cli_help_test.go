package main

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/hub"
)

// commandNames are the registered commands, sorted.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TestHelpOnStdout: help that was asked for (--help, -h, -help, help, help
// CMD, CMD -h) is the output: stdout, exit 0, nothing on stderr, so that
// `streamguard --help | less` shows it. Mistakes stay on stderr with
// exit 2.
func TestHelpOnStdout(t *testing.T) {
	var list string
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}, {"help", "-h"}} {
		code, out, errs := run(t, args...)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "streamguard: streaming safety moderation with Qwen3Guard-Stream models\n") ||
			!strings.Contains(out, "(streamguard help COMMAND, or COMMAND -h, for its flags)") || !strings.Contains(out, "\n  moderate     ") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, errs, out)
		}
		if list == "" {
			list = out
		} else if out != list {
			t.Errorf("%q printed another list:\n%s", args, out)
		}
	}
	// No command at all is a mistake: the same list, on stderr.
	if code, out, errs := run(t); code != 2 || out != "" || errs != list {
		t.Errorf("no arguments: exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}

	for _, name := range commandNames() {
		code, out, errs := run(t, name, "-h")
		if code != 0 || errs != "" || !strings.HasPrefix(out, "Usage: streamguard "+name) {
			t.Errorf("%s -h: exit %d, stderr %q, stdout:\n%s", name, code, errs, out)
			continue
		}
		// help CMD prints CMD's help, not the command list.
		code, help, errs := run(t, "help", name)
		if code != 0 || errs != "" || help != out {
			t.Errorf("help %s: exit %d, stderr %q; stdout differs from %s -h:\n%s", name, code, errs, name, help)
		}
		if code, long, _ := run(t, name, "--help"); code != 0 || long != out {
			t.Errorf("%s --help: exit %d, stdout differs from -h", name, code)
		}
	}
	if _, out, _ := run(t, "help", "moderate"); !strings.HasPrefix(out, "Usage: streamguard moderate --model ") || strings.Contains(out, "Commands:") {
		t.Errorf("help moderate:\n%s", out)
	}

	// A command without flags prints its usage line and no "Flags:" header.
	if code, out, errs := run(t, "version", "-h"); code != 0 || out != "Usage: streamguard version\n" || errs != "" {
		t.Errorf("version -h: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// Mistakes: stderr, exit 2, nothing on stdout.
	if code, out, errs := run(t, "help", "nosuch"); code != 2 || out != "" ||
		errs != "streamguard help: unknown command \"nosuch\"\n\n"+list {
		t.Errorf("help nosuch: exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}
	if code, out, errs := run(t, "help", "moderate", "serve"); code != 2 || out != "" || errs != "streamguard help: want one command name, got 2\n" {
		t.Errorf("help moderate serve: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs := run(t, "moderate", "--bogus")
	if code != 2 || out != "" || !strings.HasPrefix(errs, "flag provided but not defined: -bogus\nUsage: streamguard moderate ") ||
		!strings.HasSuffix(errs, "\nstreamguard moderate: usage error: flag provided but not defined: -bogus\n") {
		t.Errorf("moderate --bogus: exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}
	// pull (its own usage text) and verify (flags after DIR) parse in a
	// loop: a mistake in a later round still goes to stderr.
	if code, out, errs := run(t, "verify", "some/dir", "--bogus"); code != 2 || out != "" || !strings.Contains(errs, "Usage: streamguard verify ") {
		t.Errorf("verify DIR --bogus: exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}
	if code, out, errs := run(t, "pull", "Org/Name", "-h"); code != 0 || errs != "" || !strings.HasPrefix(out, "Usage: streamguard pull ") {
		t.Errorf("pull ID -h: exit %d, stderr %q, stdout:\n%s", code, errs, out)
	}
}

// TestJSONFlags pins README's rule: every command that prints a report
// takes --json, except healthcheck (its answer is its exit status) and
// version; forward writes JSON to --out whatever it is given.
func TestJSONFlags(t *testing.T) {
	var without []string
	for _, name := range commandNames() {
		_, out, _ := run(t, name, "-h")
		if !strings.Contains(out, "\n  -json") {
			without = append(without, name)
		}
	}
	if want := []string{"forward", "healthcheck", "version"}; !slices.Equal(without, want) {
		t.Errorf("commands without --json: %q, want %q (README's Quick start says which)", without, want)
	}
}

// TestModelArgsTakeHubIDs: every command whose usage offers a model takes
// a hub id there (it resolves the argument with resolveModel, which here
// looks in an empty offline cache), and its usage line and flag help say
// so in the same words.
func TestModelArgsTakeHubIDs(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data.jsonl")
	if err := os.WriteFile(data, []byte(`{"prompt": "hi", "prompt_label": "Safe"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := hub.Env{Endpoint: "http://127.0.0.1:9", CacheDir: filepath.Join(base, "cache"), Offline: true}
	old := hubEnv
	hubEnv = func() hub.Env { return env }
	t.Cleanup(func() { hubEnv = old })

	const id = "Org/Name"
	out := filepath.Join(base, "out")
	cases := map[string][]string{
		"bench":       {"--model", id, "--pp", "0", "--positions", "", "--streams", ""},
		"eval":        {"--model", id, "--data", data},
		"forward":     {"--model", id, "--ids", "1"},
		"graft":       {"--backbone", id, "--heads-from", id, "--out", out},
		"loadtest":    {"--model", id},
		"moderate":    {"--model", id, "--prompt", "hi"},
		"prepare":     {"--model", id},
		"quantize":    {"--model", id, "--out", out},
		"serve":       {"--model", id, "--addr", "127.0.0.1:0"},
		"train-heads": {"--model", id, "--data", data, "--out", out},
		"verify":      {id},
	}
	for _, name := range commandNames() {
		_, help, _ := run(t, name, "-h")
		usage, _, _ := strings.Cut(help, "\n")
		args, takesModel := cases[name]
		if offers := strings.Contains(help, "\n  -model ") || name == "verify" || name == "graft"; offers != takesModel {
			t.Errorf("%s: offers a model %v, but the test's table says %v", name, offers, takesModel)
			continue
		}
		if !takesModel {
			continue
		}
		if strings.Contains(usage, "DIR ") && !strings.Contains(usage, "DIR|ORG/NAME[@REV]") || strings.Count(usage, "ORG/NAME[@REV]") == 0 {
			t.Errorf("%s: usage line does not say DIR|ORG/NAME[@REV]: %q", name, usage)
		}
		if name != "verify" && strings.Count(help, "hub id ORG/NAME[@REV]") != strings.Count(usage, "ORG/NAME[@REV]") {
			t.Errorf("%s: not every model flag's help says \"hub id ORG/NAME[@REV]\":\n%s", name, help)
		}
		code, stdout, errs := run(t, append([]string{name}, args...)...)
		if want := "streamguard " + name + ": " + id + " is not in the hub cache "; code != 1 || stdout != "" || !strings.HasPrefix(errs, want) {
			t.Errorf("%s %q: exit %d, stderr %q; want exit 1 and %q...", name, args, code, errs, want)
		}
	}
}
