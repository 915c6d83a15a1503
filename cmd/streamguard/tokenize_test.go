package main

import (
	"bytes"
	"strings"
	"testing"
)

func runTokenizeWith(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	old := tokenizeStdin
	tokenizeStdin = strings.NewReader(stdin)
	defer func() { tokenizeStdin = old }()
	var o, e bytes.Buffer
	code = mainWithArgs(append([]string{"tokenize"}, args...), &o, &e)
	return o.String(), e.String(), code
}

func TestTokenizeEncode(t *testing.T) {
	in := "{\"text\":\"Hello <|im_end|> world\"}\n\n{\"text\":\"\"}\n"
	// By default a tag spelled in text is text: "<|", "im", "_end", "|>".
	out, errOut, code := runTokenizeWith(t, in)
	want := "{\"ids\":[9707,82639,318,6213,91,29,1879]}\n{\"ids\":[]}\n"
	if code != 0 || out != want {
		t.Fatalf("code %d stdout %q stderr %q, want %q", code, out, errOut, want)
	}
	// --parse-special parses it as Hugging Face's encode does.
	out, errOut, code = runTokenizeWith(t, in, "--parse-special")
	want = "{\"ids\":[9707,220,151645,1879]}\n{\"ids\":[]}\n"
	if code != 0 || out != want {
		t.Fatalf("--parse-special: code %d stdout %q stderr %q, want %q", code, out, errOut, want)
	}
}

func TestTokenizeDecode(t *testing.T) {
	in := "{\"ids\":[9707,220,151645,1879]}\n"
	if out, _, code := runTokenizeWith(t, in, "--decode"); code != 0 || out != "{\"text\":\"Hello <|im_end|> world\"}\n" {
		t.Errorf("--decode: code %d, %q", code, out)
	}
	if out, _, code := runTokenizeWith(t, in, "--decode", "--skip-special"); code != 0 || out != "{\"text\":\"Hello  world\"}\n" {
		t.Errorf("--decode --skip-special: code %d, %q", code, out)
	}
}

func TestTokenizeChat(t *testing.T) {
	in := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello! How can I help you today?"}]}` + "\n"
	out, errOut, code := runTokenizeWith(t, in, "--chat")
	// From chat_vectors.jsonl (Hugging Face reference).
	want := `{"text":"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello! How can I help you today?<|im_end|>\n","ids":[151644,872,198,6023,151645,198,151644,77091,198,151667,271,151668,271,9707,0,2585,646,358,1492,498,3351,30,151645,198],"user_end_index":4}` + "\n"
	if code != 0 || out != want {
		t.Fatalf("code %d stderr %q\n got %s\nwant %s", code, errOut, out, want)
	}
}

func TestTokenizeBadLineNamesLine(t *testing.T) {
	cases := []struct {
		in   string
		args []string
		line string
	}{
		{"{\"text\":\"a\"}\nnot json\n", nil, "line 2"},
		{"{\"text\":\"a\"}\n{\"ids\":[1]}\n", nil, "line 2"},
		{"{\"ids\":[1.5]}\n", []string{"--decode"}, "line 1"},
		{"\n{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\n", []string{"--chat"}, "line 2"},
		{"{\"messages\":[]}\n", []string{"--chat"}, "line 1"},
	}
	for _, c := range cases {
		out, errOut, code := runTokenizeWith(t, c.in, c.args...)
		if code == 0 || !strings.Contains(errOut, c.line) {
			t.Errorf("%q %v: code %d stderr %q, want an error naming %s", c.in, c.args, code, errOut, c.line)
		}
		// Lines before the bad one are answered ("a" is id 64).
		if strings.HasPrefix(c.in, "{\"text\":\"a\"}\n") && out != "{\"ids\":[64]}\n" {
			t.Errorf("%q: stdout %q, want the first line's answer", c.in, out)
		}
	}
}

func TestTokenizeUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--decode", "--chat"}, {"--skip-special"}, {"extra"}, {"--decode", "--parse-special"}} {
		if _, _, code := runTokenizeWith(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if _, errOut, code := runTokenizeWith(t, "", "--tokenizer", "/nonexistent/tok.json"); code != 1 || !strings.Contains(errOut, "/nonexistent/tok.json") {
		t.Errorf("missing tokenizer: exit %d stderr %q", code, errOut)
	}
}
