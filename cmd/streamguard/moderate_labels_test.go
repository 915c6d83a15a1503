package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestModerateLabelEscapes: the category names come from the model's
// config.json (an untrusted folder, or a hub repository), and a name
// holding a terminal escape sequence (ESC ] 0 ; TITLE BEL sets the window
// title, ESC [ 2 J clears the screen) would reach the terminal through
// moderate's table. The load refuses it, naming it quoted.
func TestModerateLabelEscapes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"response_category_map", "query_category_map"} {
		m := cfg[k].(map[string]any)
		for i, v := range m {
			m[i] = "\x1b]0;owned\x07\x1b[2J" + v.(string)
		}
	}
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", "I gun do I eat me money slowly")
	if code != 1 || !strings.Contains(errs, "holds a control, format") {
		t.Errorf("a model with escape sequences in its labels: exit %d, stderr %q; want it refused", code, errs)
	}
	if strings.ContainsRune(out, '\x1b') || strings.ContainsRune(errs, '\x1b') {
		i := strings.IndexRune(out, '\x1b')
		t.Errorf("moderate (exit %d) wrote the model's escape sequences to the terminal: %q", code, out[max(0, i-40):min(len(out), i+40)])
	}
}
