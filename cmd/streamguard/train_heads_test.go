package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/server"
	"github.com/streamguard/streamguard/internal/synth"
)

// TestTrainHeadsVerifyModerate drives train-heads → verify → moderate
// --jsonl and serve with 12 custom categories: the written model verifies,
// and moderate's and the server's verdicts at every labelled validation
// position equal the ones train-heads reported for it (--predictions).
func TestTrainHeadsVerifyModerate(t *testing.T) {
	base := t.TempDir()
	model := filepath.Join(base, "m")
	if _, err := synth.Generate(model, synth.Options{Preset: "tiny", DType: "bf16", Seed: 2}); err != nil {
		t.Fatal(err)
	}
	cats := []string{"Weapons", "Fraud", "Malware", "Harassment", "Self-Harm", "Drugs",
		"Extremism", "Privacy", "Gambling", "Medical Advice", "Legal Advice", "Financial Advice"}
	risks := []string{"Safe", "Unsafe", "Controversial"}
	// Labels are arbitrary: this checks plumbing, not learning.
	write := func(name string, n, seed int) string {
		var b strings.Builder
		for i := range n {
			k := i*7 + seed
			line := map[string]any{
				"id": fmt.Sprintf("%s-%d", name, i),
				"messages": []map[string]string{
					{"role": "user", "content": fmt.Sprintf("question number %d about topic %d", i, k%13)},
					{"role": "assistant", "content": fmt.Sprintf("an answer with %d words in it, more or less", k%9)},
				},
				"prompt": map[string]string{"risk": risks[k%3], "category": cats[k%12]},
			}
			if k%2 == 0 {
				line["response"] = map[string]any{"risk": "Unsafe", "category": cats[(k/2)%12], "unsafe_start_index": k % 4}
			} else {
				line["response"] = map[string]any{"risk": "Safe"}
			}
			j, _ := json.Marshal(line)
			b.Write(append(j, '\n'))
		}
		path := filepath.Join(base, name+".jsonl")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	trainFile, valFile := write("train", 60, 0), write("val", 20, 3)
	out, preds := filepath.Join(base, "out"), filepath.Join(base, "preds.jsonl")

	code, stdout, stderr := run(t, "train-heads", "--model", model, "--data", trainFile, "--val", valFile, "--out", out,
		"--categories", strings.Join(cats, ","), "--epochs", "3", "--cache-dir", filepath.Join(base, "cache"),
		"--predictions", preds, "--json", "--quiet")
	if code != 0 {
		t.Fatalf("train-heads: exit %d\n%s", code, stderr)
	}
	var rep struct {
		Paths []struct {
			Path   string
			Epochs []struct{ TrainLoss float64 } `json:"epochs"`
			Val    struct{ Samples int }
		}
		Files []struct{ Name, How string }
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Paths) != 2 || len(rep.Paths[0].Epochs) != 3 {
		t.Fatalf("train-heads --json: %v\n%s", err, stdout)
	}

	if code, stdout, stderr := run(t, "verify", out); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}

	in, err := os.ReadFile(valFile)
	if err != nil {
		t.Fatal(err)
	}
	var mout, merr bytes.Buffer
	if err := runModerate([]string{"--model", out, "--jsonl"}, bytes.NewReader(in), &mout, &merr); !errors.Is(err, errFlagged) {
		// The held-out set has unsafe conversations the trained heads flag.
		t.Fatalf("moderate --jsonl: %v, want errFlagged (exit 3)\n%s", err, merr.String())
	}
	type verdict struct{ Risk, Category string }
	byLine := map[int]struct {
		Prompt verdict
		Tokens []verdict
	}{}
	sc := bufio.NewScanner(&mout)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r struct {
			Line   int
			Prompt verdict
			Tokens []verdict
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		byLine[r.Line] = struct {
			Prompt verdict
			Tokens []verdict
		}{r.Prompt, r.Tokens}
	}
	served := serveVerdicts(t, out, valFile)
	pf, err := os.ReadFile(preds)
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, line := range strings.Split(strings.TrimSpace(string(pf)), "\n") {
		var p struct {
			Line           int
			Path           string
			Token          int
			Risk, Category string
		}
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatal(err)
		}
		got := byLine[p.Line].Prompt
		if p.Token >= 0 {
			got = byLine[p.Line].Tokens[p.Token]
		}
		if got.Risk != p.Risk || got.Category != p.Category {
			t.Errorf("line %d %s token %d: moderate %s/%s, train-heads %s/%s", p.Line, p.Path, p.Token, got.Risk, got.Category, p.Risk, p.Category)
		}
		sv, ok := served[[2]int{p.Line, p.Token}]
		if !ok || sv.Risk != p.Risk || sv.Category != p.Category {
			t.Errorf("line %d %s token %d: serve %s/%s (found %v), train-heads %s/%s", p.Line, p.Path, p.Token, sv.Risk, sv.Category, ok, p.Risk, p.Category)
		}
		compared++
	}
	if compared != rep.Paths[0].Val.Samples+rep.Paths[1].Val.Samples || compared < 100 {
		t.Fatalf("compared %d verdicts, report has %d + %d", compared, rep.Paths[0].Val.Samples, rep.Paths[1].Val.Samples)
	}

	// Mistakes.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--data", trainFile, "--out", out + "2"}, 2, "--model is required"},
		{[]string{"--model", model, "--data", trainFile, "--out", out + "2", "--init", "zero"}, 2, `init "zero"`},
		{[]string{"--model", model, "--data", trainFile, "--out", out + "2", "--paths", "both"}, 2, `unknown path "both"`},
		{[]string{"--model", model, "--data", filepath.Join(base, "none.jsonl"), "--out", out + "2"}, 1, "no such file"},
		{[]string{"--model", model, "--data", trainFile, "--out", out, "--no-cache"}, 1, "is not empty"},
		{[]string{"--model", model, "--data", trainFile, "--out", out + "2", "--no-cache", "--categories", "Weapons"}, 1, `is not in the taxonomy (Weapons)`},
	} {
		code, _, stderr := run(t, append([]string{"train-heads", "--quiet"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}

// serveVerdicts serves the model at dir over HTTP and opens one stream per
// line of the JSONL file with its messages (the prompt and the whole
// response), flushing the response: the verdicts keyed by [line, token]
// (token -1 is the prompt), with the labels the server names.
func serveVerdicts(t *testing.T, dir, file string) map[[2]int]struct{ Risk, Category string } {
	t.Helper()
	g, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	srv, err := server.New(server.Options{Model: g})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer func() { ts.Close(); srv.Close() }()
	type verdict struct {
		Index          int
		Risk, Category string
	}
	post := func(path string, body any) (out struct {
		ID     string
		Prompt *verdict
		Tokens []verdict
	}) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(ts.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			msg, _ := io.ReadAll(resp.Body)
			t.Fatalf("POST %s: %s %s", path, resp.Status, msg)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]int]struct{ Risk, Category string }{}
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var ex struct{ Messages []map[string]string }
		if err := json.Unmarshal([]byte(line), &ex); err != nil {
			t.Fatal(err)
		}
		open := post("/v1/streams", map[string]any{"messages": ex.Messages})
		flush := post("/v1/streams/"+open.ID+"/flush", map[string]any{})
		got[[2]int{i + 1, -1}] = struct{ Risk, Category string }{open.Prompt.Risk, open.Prompt.Category}
		for _, v := range append(open.Tokens, flush.Tokens...) {
			got[[2]int{i + 1, v.Index}] = struct{ Risk, Category string }{v.Risk, v.Category}
		}
	}
	return got
}
