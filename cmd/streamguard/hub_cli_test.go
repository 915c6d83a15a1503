package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/hub"
	"github.com/streamguard/streamguard/internal/hub/hubtest"
	"github.com/streamguard/streamguard/internal/synth"
)

// tinyRepoFiles generates the tiny model once and returns its files.
func tinyRepoFiles(t *testing.T) map[string]hubtest.File {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]hubtest.File{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = hubtest.File{Data: b, LFS: len(b) > 1<<20}
	}
	return files
}

// fakeHubWithTiny serves files as the repository Org/Tiny-Guard, with a
// fresh cache, and points the commands' hub settings at it.
func fakeHubWithTiny(t *testing.T, files map[string]hubtest.File) (*hubtest.Server, *hub.Env) {
	t.Helper()
	h := hubtest.New(t)
	h.AddRepo("Org/Tiny-Guard", files)
	env := &hub.Env{Endpoint: h.URL(), CacheDir: filepath.Join(t.TempDir(), "hub")}
	old := hubEnv
	hubEnv = func() hub.Env { return *env }
	t.Cleanup(func() { hubEnv = old })
	return h, env
}

// TestHubCommands drives pull and hub ids in the model-taking commands
// against a fake hub serving a generated tiny model (generated once).
func TestHubCommands(t *testing.T) {
	files := tinyRepoFiles(t)
	t.Run("pull then use", func(t *testing.T) { testPullThenUseHubID(t, files) })
	t.Run("first use pulls, offline", func(t *testing.T) { testModelRefPullsOnFirstUseAndOffline(t, files) })
	t.Run("local folder wins", func(t *testing.T) { testLocalFolderWinsOverHubID(t, files) })
	t.Run("usage", func(t *testing.T) { testPullEvalUsage(t, files) })
}

func testPullThenUseHubID(t *testing.T, files map[string]hubtest.File) {
	h, env := fakeHubWithTiny(t, files)

	code, out, errs := run(t, "pull", "Org/Tiny-Guard", "--json")
	if code != 0 {
		t.Fatalf("pull: exit %d\n%s", code, errs)
	}
	var snap hub.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("pull --json: %v\n%s", err, out)
	}
	if !strings.HasPrefix(snap.Dir, filepath.Join(env.CacheDir, "models--Org--Tiny-Guard", "snapshots")) || len(snap.Files) != 5 {
		t.Fatalf("snapshot %+v", snap)
	}
	for _, f := range snap.Files {
		if f.Status != hub.StatusDownloaded {
			t.Errorf("%+v", f)
		}
	}
	if errs != "" {
		t.Errorf("pull --json, stderr not a terminal: stderr %q, want nothing", errs)
	}
	h.TakeRequests()

	// Every model-taking command accepts the id, served from the cache.
	if code, out, errs := run(t, "verify", "Org/Tiny-Guard"); code != 0 || !strings.Contains(out, "OK: complete Qwen3Guard-Stream model") {
		t.Errorf("verify Org/Tiny-Guard: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := run(t, "moderate", "--model", "Org/Tiny-Guard", "--prompt", "Hello"); code != 0 || !strings.Contains(out, "prompt: ") {
		t.Errorf("moderate: exit %d\n%s\n%s", code, out, errs)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("a cached model still sent %v", reqs)
	}

	// Pulling again finds everything cached; the text output lists it.
	code, out, errs = run(t, "pull", "Org/Tiny-Guard", "--quiet")
	if code != 0 || strings.Count(out, "cached") != 5 || !strings.HasSuffix(strings.TrimSpace(out), snap.Dir) {
		t.Errorf("second pull: exit %d\n%s\n%s", code, out, errs)
	}
	// On a terminal, without --json or --quiet, pull draws its bar.
	fakeTerminal(t)
	code, _, errs = run(t, "pull", "Org/Tiny-Guard")
	if code != 0 || !strings.Contains(errs, "5/5 files") {
		t.Errorf("pull on a terminal: exit %d, no progress bar on stderr: %q", code, errs)
	}
	code, _, errs = run(t, "pull", "Org/Tiny-Guard", "--json")
	if code != 0 || errs != "" {
		t.Errorf("pull --json on a terminal: exit %d, stderr %q, want nothing", code, errs)
	}
}

// fakeTerminal makes the commands take stderr for a terminal.
func fakeTerminal(t *testing.T) {
	old := stderrIsTerminal
	stderrIsTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { stderrIsTerminal = old })
}

func testModelRefPullsOnFirstUseAndOffline(t *testing.T, files map[string]hubtest.File) {
	h, env := fakeHubWithTiny(t, files)
	fakeTerminal(t)
	// Not cached: the first use pulls, with the bar on stderr (a terminal).
	page := filepath.Join(t.TempDir(), "report.html")
	code, out, errs := run(t, "eval", "--model", "Org/Tiny-Guard@main", "--data", "../../testdata/eval/synthetic.jsonl", "--json", "--quiet", "--html", page)
	if code != 0 {
		t.Fatalf("eval: exit %d\n%s", code, errs)
	}
	if !strings.Contains(errs, "5/5 files") || !strings.Contains(errs, "Org/Tiny-Guard: commit ") {
		t.Errorf("eval of an uncached id did not report the pull: %q", errs)
	}
	var rep struct {
		Items  int `json:"items"`
		Prompt struct {
			Items int `json:"items"`
		} `json:"prompt"`
		Response struct {
			Items     int `json:"items"`
			Positions struct {
				Items int `json:"items"`
			} `json:"positions"`
		} `json:"response"`
		Throughput struct {
			Tokens int `json:"tokens"`
		} `json:"throughput"`
		PerItem []json.RawMessage `json:"per_item"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Items != 38 || rep.Prompt.Items != 37 || rep.Response.Items != 24 || rep.Response.Positions.Items != 10 || len(rep.PerItem) != 38 || rep.Throughput.Tokens == 0 {
		t.Errorf("eval report %+v", rep)
	}
	// --html wrote the same run's page next to the JSON.
	if b, err := os.ReadFile(page); err != nil {
		t.Error(err)
	} else if want := fmt.Sprintf(`data-metric="throughput.tokens" data-value="%d"`, rep.Throughput.Tokens); !strings.Contains(string(b), want) {
		t.Errorf("--html page lacks %s", want)
	}
	h.TakeRequests()

	env.Offline = true
	if code, _, errs := run(t, "verify", "Org/Tiny-Guard"); code != 0 {
		t.Errorf("offline, cached: exit %d %s", code, errs)
	}
	code, _, errs = run(t, "moderate", "--model", "Org/Other-Model", "--prompt", "x")
	if code != 1 || !strings.Contains(errs, "HF_HUB_OFFLINE") || !strings.Contains(errs, "streamguard pull Org/Other-Model") {
		t.Errorf("offline, not cached: exit %d %q", code, errs)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("offline mode sent %v", reqs)
	}

	// Online, an id the hub does not have: the message says both.
	env.Offline = false
	code, _, errs = run(t, "verify", "Org/Missing")
	if code != 1 || !strings.Contains(errs, "is not a folder, and the hub") || !strings.Contains(errs, "RepoNotFound") {
		t.Errorf("unknown id: exit %d %q", code, errs)
	}
}

func testLocalFolderWinsOverHubID(t *testing.T, files map[string]hubtest.File) {
	h, _ := fakeHubWithTiny(t, files)
	base := t.TempDir()
	t.Chdir(base)
	// resolveModel only asks whether the path exists; the loader does the rest.
	if err := os.MkdirAll(filepath.Join("Org", "Tiny-Guard"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := resolveModel("Org/Tiny-Guard", os.Stderr)
	if err != nil || dir != "Org/Tiny-Guard" {
		t.Errorf("resolveModel = %q, %v; want the local folder", dir, err)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("a local folder still sent %v", reqs)
	}
	if dir, err := resolveModel("/no/such/folder", os.Stderr); dir != "" || err == nil || err.Error() != "no such folder: /no/such/folder" {
		t.Errorf("a missing path: %q, %v; want no such folder", dir, err)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("a missing path sent %v", reqs)
	}
}

func testPullEvalUsage(t *testing.T, files map[string]hubtest.File) {
	fakeHubWithTiny(t, files)
	for _, args := range [][]string{{"pull"}, {"pull", "a/b", "c/d"}, {"pull", "not-an-id"}, {"pull", "a/b", "--parallel", "0"}} {
		if code, _, errs := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
	// Help asked for is printed on stdout, pull's own text included.
	if code, out, errs := run(t, "pull", "-h"); code != 0 || !strings.Contains(out, "HF_ENDPOINT") || errs != "" {
		t.Errorf("pull -h: %d %q %q", code, out, errs)
	}
	for _, args := range [][]string{{"eval"}, {"eval", "--model", "x"}, {"eval", "--model", "x", "--data", "y", "--mode", "medium"}, {"eval", "--model", "x", "--data", "y", "--batch", "0"}} {
		if code, _, errs := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
	if code, _, errs := run(t, "eval", "--model", "x", "--data", "/no/such.jsonl"); code != 1 || !strings.Contains(errs, "/no/such.jsonl") {
		t.Errorf("missing data: %d %s", code, errs)
	}
	if code, out, errs := run(t, "eval", "-h"); code != 0 || !strings.Contains(out, "unsafe_start_index") || errs != "" {
		t.Errorf("eval -h: %d %q %q", code, out, errs)
	}
}
