package guard

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadMissingIsNotExist: a model Load finds nowhere — a folder that
// does not exist, a hub id the local cache lacks — gives an error a caller
// can branch on with errors.Is(err, fs.ErrNotExist), still saying where
// Load looked.
func TestLoadMissingIsNotExist(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1") // any request would fail
	for _, c := range []struct{ name, dir, want string }{
		{"missing folder", filepath.Join(t.TempDir(), "nope"), "no such model folder"},
		{"missing relative path", "./Org/Guard-Tiny", "no such model folder"},
		{"uncached hub id", "Org/Missing", "streamguard pull Org/Missing"},
	} {
		_, err := Load(context.Background(), c.dir, Options{})
		if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "guard: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want a \"guard: \" error wrapping fs.ErrNotExist and saying %q", c.name, err, c.want)
		}
	}
	// A folder that exists but is incomplete is not "not exist".
	dir := writeTinyFolder(t, "query_category_head.weight")
	if _, err := Load(context.Background(), dir, Options{}); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("incomplete folder: %v, want an error that is not fs.ErrNotExist", err)
	}
}

// TestErrorsReadGuard: every error of the package's API reads "guard: ...",
// whichever internal package found the problem; a policy naming an unknown
// category lists the ones the model has.
func TestErrorsReadGuard(t *testing.T) {
	ctx := context.Background()
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	errs := map[string]error{}
	for name, p := range map[string]Policy{
		"unknown mode":           {Mode: 7},
		"negative debounce":      {Debounce: -1},
		"unknown threshold":      {Thresholds: map[string]float32{"Violence": 0.5}},
		"threshold out of range": {Thresholds: map[string]float32{"Violent": 1.5}},
		"unknown block":          {Block: []string{"Violence"}},
	} {
		errs["SetPolicy "+name] = s.SetPolicy(p)
	}
	_, errs["wrap with a bad policy"] = wrap(m.net, nil, Options{Policy: Policy{Block: []string{"Weather"}}})
	_, errs["ParseMode"] = ParseMode("medium")
	_, errs["Load bad KVCache"] = Load(ctx, t.TempDir(), Options{KVCache: "fp8"})
	_, errs["Load bad device"] = Load(ctx, t.TempDir(), Options{Device: "tpu"})
	_, errs["Load empty folder"] = Load(ctx, t.TempDir(), Options{})
	_, errs["Load incomplete folder"] = Load(ctx, writeTinyFolder(t, "query_category_head.weight"), Options{})
	_, errs["Load bad tokenizer"] = Load(ctx, writeTinyFolder(t), Options{Tokenizer: filepath.Join(t.TempDir(), "tokenizer.json")})
	_, errs["Load bad hub id"] = Load(ctx, "Org/Name@", Options{})
	_, errs["Moderate empty"] = m.Moderate(ctx, nil, nil)
	_, errs["JudgePrompt no messages"] = s.JudgePrompt(ctx, nil)
	errs["SetMaxTokens"] = s.SetMaxTokens(-1)
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "guard: ") {
			t.Errorf("%s: %q does not start with \"guard: \"", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	err := errs["SetPolicy unknown threshold"]
	if err == nil || !strings.Contains(err.Error(), `unknown category "Violence"`) || !strings.Contains(err.Error(), `"Violent", "Sexual Content or Sexual Acts"`) || !strings.Contains(err.Error(), `"Jailbreak"`) {
		t.Errorf("unknown threshold category: %v, want one listing the model's categories", err)
	}
}

// A stream of a nil *Model (a failed Load whose error was dropped) names the
// model as what is missing, as a zero Model's stream does, not the stream.
func TestNilModelStreamNamesTheModel(t *testing.T) {
	var m *Model
	_, err := m.NewStream().JudgePrompt(context.Background(), userMsg)
	if !errors.Is(err, errNotLoaded) || !strings.Contains(err.Error(), "model is not loaded") {
		t.Errorf("stream of a nil *Model: %v; want the model's error", err)
	}
}
