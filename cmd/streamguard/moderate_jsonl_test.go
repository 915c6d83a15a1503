package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestModerateJSONLKeyCase: encoding/json alone would take "Messages" (or
// "Content") for "messages" ("content") and keep the last of two such
// keys, judging a case-variant twin instead of what every exact-key reader
// of the file (Python, jq) sees. Such a line is refused with its "error",
// as the server refuses such a body.
func TestModerateJSONLKeyCase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const (
		diverging = "I gun do I eat me money slowly"     // flags (TestModerateRules)
		clean     = "knife gun do I go knife help knife" // does not
	)
	conv := func(resp string) string {
		return `[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "` + resp + `"}]`
	}
	for _, line := range []string{
		// The top-level key in two cases.
		`{"id": 1, "messages": ` + conv(diverging) + `, "Messages": ` + conv(clean) + `}`,
		// The content key of the response in two cases.
		`{"id": 2, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "` + diverging + `", "Content": "` + clean + `"}]}`,
	} {
		moderateStdin = strings.NewReader(line + "\n")
		code, out, errs := run(t, "moderate", "--model", dir, "--jsonl")
		moderateStdin = os.Stdin
		var res struct {
			Error    string `json:"error"`
			Decision *struct {
				Flagged bool `json:"flagged"`
			} `json:"decision"`
		}
		_ = json.Unmarshal([]byte(out), &res)
		if code != 1 || !strings.Contains(res.Error, "invalid JSON") {
			t.Errorf("line %s\n  exit %d, stderr %q; want the line refused (\"error\")\n  output: %s", line, code, errs, trimOut(out))
		}
	}
}

// trimOut shortens a result line for a failure message.
func trimOut(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// TestModerateJSONLLongLine: a line over the bound gets its own "error"
// and the lines after it are judged, as after any other bad line (the
// bound is lowered here from its 64 MiB).
func TestModerateJSONLLongLine(t *testing.T) {
	defer func(n int) { maxJSONLLine = n }(maxJSONLLine)
	maxJSONLLine = 1 << 10
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	ok := `{"id": "ok", "messages": [{"role": "user", "content": "Hi"}]}` + "\n"
	long := `{"id": "long", "messages": [{"role": "user", "content": "` + strings.Repeat("a", maxJSONLLine) + `"}]}` + "\n"
	moderateStdin = strings.NewReader(ok + long + ok)
	defer func() { moderateStdin = os.Stdin }()
	code, out, errs := run(t, "moderate", "--model", dir, "--jsonl")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || code != 1 || !strings.Contains(lines[1], `"line":2`) || !strings.Contains(lines[1], "longer than") ||
		strings.Contains(lines[2], `"error"`) || !strings.Contains(lines[2], `"line":3`) {
		t.Errorf("3 input lines, the second over %d bytes: exit %d, stderr %q; want 3 results, the second's an error, the third judged:\n%s",
			maxJSONLLine, code, errs, out)
	}
}

// readJSONLLine: lines as a line reader gives them, the last without a
// line end too; a line longer than the bound (whatever the reader's
// buffer) dropped to its end, the next read whole.
func TestReadJSONLLine(t *testing.T) {
	in := "abc\n" + strings.Repeat("x", 9) + "\n12345678\n\nlast"
	r := bufio.NewReaderSize(strings.NewReader(in), 16)
	type got struct {
		line    string
		tooLong bool
	}
	var lines []got
	for {
		b, tooLong, err := readJSONLLine(r, 8, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, got{string(b), tooLong})
	}
	want := []got{{"abc", false}, {"", true}, {"12345678", false}, {"", false}, {"last", false}}
	if !slices.Equal(lines, want) {
		t.Errorf("lines %+v, want %+v", lines, want)
	}
	long := strings.Repeat("y", 100) + "\nnext\n"
	r = bufio.NewReaderSize(strings.NewReader(long), 16)
	if b, tooLong, err := readJSONLLine(r, 64, nil); !tooLong || len(b) != 0 || err != nil {
		t.Errorf("a line past the reader's buffer and the bound: %q, %v, %v", b, tooLong, err)
	}
	if b, tooLong, err := readJSONLLine(r, 64, nil); string(b) != "next" || tooLong || err != nil {
		t.Errorf("the line after it: %q, %v, %v", b, tooLong, err)
	}
}

// FuzzReadJSONLLine: readJSONLLine gives the lines of any input, as
// splitting it at each "\n" does (no empty last piece), with those over the
// bound dropped and marked, whatever the reader's buffer size.
func FuzzReadJSONLLine(f *testing.F) {
	f.Add([]byte("abc\n\nxyzxyzxyzxyz\nlast"), uint8(4), uint8(16))
	f.Add([]byte("\n\n\n"), uint8(1), uint8(16))
	f.Add([]byte(strings.Repeat("a", 40)+"\nb\n"), uint8(8), uint8(17))
	f.Fuzz(func(t *testing.T, in []byte, max, size uint8) {
		var want []string
		if len(in) > 0 {
			want = strings.Split(string(in), "\n")
			if strings.HasSuffix(string(in), "\n") {
				want = want[:len(want)-1]
			}
		}
		r := bufio.NewReaderSize(strings.NewReader(string(in)), int(size))
		for i := 0; ; i++ {
			b, tooLong, err := readJSONLLine(r, int(max), nil)
			if err == io.EOF {
				if i != len(want) {
					t.Fatalf("%d lines, want %d (%q)", i, len(want), want)
				}
				return
			}
			if err != nil || i >= len(want) {
				t.Fatalf("line %d: %v (want %d lines)", i, err, len(want))
			}
			switch long := len(want[i]) > int(max); {
			case long != tooLong:
				t.Fatalf("line %d (%d bytes, bound %d): tooLong %v", i, len(want[i]), max, tooLong)
			case !long && string(b) != want[i]:
				t.Fatalf("line %d: %q, want %q", i, b, want[i])
			}
		}
	})
}
