package checkpoint_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/synth"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

func TestCheckTokenizerQwen3(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.CheckTokenizer(tok, 151936); err != nil {
		t.Fatal(err)
	}
	for _, c := range checkpoint.CheckScaffold(tok) {
		if !c.OK || len(c.Got) != 1 || c.Got[0] != c.ID {
			t.Errorf("%+v", c)
		}
	}
	err = checkpoint.CheckTokenizer(tok, 1000)
	if err == nil || !strings.Contains(err.Error(), "tokenizer has 151669 tokens but the model's vocab_size is 1000") {
		t.Errorf("small vocab_size: %v", err)
	}
}

// editTokenizer rewrites dir/tokenizer.json with old replaced by new.
func editTokenizer(t *testing.T, dir, old, new string) {
	t.Helper()
	p := filepath.Join(dir, "tokenizer.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	nb := bytes.ReplaceAll(b, []byte(old), []byte(new))
	if bytes.Equal(nb, b) {
		t.Fatalf("%q not in tokenizer.json", old)
	}
	if err := os.WriteFile(p, nb, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReportTokenizerFile(t *testing.T) {
	dir := gen(t, synth.Options{})
	r := report(t, dir)
	r.CheckTokenizerFile()
	tr := r.Tokenizer
	if !r.OK() || tr == nil || !tr.Checked || !tr.OK || tr.VocabSize != 151669 || tr.ModelVocabSize != 151936 || len(tr.Scaffold) != 12 {
		t.Fatalf("good folder: %+v %q", tr, r.Problems)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "Tokenizer:     tokenizer.json, 151669 tokens (model vocab_size 151936); the 12 chat-scaffold tokens map to the Qwen3 ids: OK") {
		t.Errorf("text: %v\n%s", err, text.String())
	}

	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"renamed special", func(t *testing.T, dir string) {
			editTokenizer(t, dir, `"content": "<think>"`, `"content": "<thunk>"`)
		}, `tokenizer.json: tokenizer has no token "<think>" (want id 151667): not a Qwen3 tokenizer`},
		{"moved special", func(t *testing.T, dir string) {
			editTokenizer(t, dir, `"id": 151645,`, `"id": 151646,`)
		}, `tokenizer.json: tokenizer maps "<|im_end|>" to id 151646, want 151645`},
		{"vocab_size", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c *config.Config) { c.VocabSize = 151000 })
		}, "tokenizer.json: tokenizer has 151669 tokens but the model's vocab_size is 151000"},
		{"unparsable", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": 1}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "tokenizer.json cannot be loaded"},
		{"oversized", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "tokenizer.json"), checkpoint.MaxTokenizerBytes+1); err != nil {
				t.Fatal(err)
			}
		}, "tokenizer.json: 67108865 bytes, more than the 67108864 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := gen(t, synth.Options{})
			tc.edit(t, dir)
			r := report(t, dir)
			r.CheckTokenizerFile()
			if r.OK() || r.Tokenizer.OK || problem(r, tc.want) == "" {
				t.Errorf("want a problem %q, got %q", tc.want, r.Problems)
			}
			var text bytes.Buffer
			if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "Tokenizer:     tokenizer.json") {
				t.Errorf("text: %v\n%s", err, text.String())
			}
		})
	}

	// A missing tokenizer.json is Report's problem; the check adds none.
	dir = gen(t, synth.Options{})
	os.Remove(filepath.Join(dir, "tokenizer.json"))
	r = report(t, dir)
	n := len(r.Problems)
	r.CheckTokenizerFile()
	if r.Tokenizer.Checked || len(r.Problems) != n {
		t.Errorf("missing: %+v %q", r.Tokenizer, r.Problems)
	}
}
