package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

func TestLoadGeneratedFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), dir, Options{Policy: Policy{Mode: Loose}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	info := m.Info()
	// The default bfloat16 cache: 2 layers × 2 (k, v) × 2 heads × 16 × 2 bytes.
	if info.Layers != 2 || info.Hidden != 64 || info.VocabSize != 151936 || info.MaxPositions != 8192 || info.KVBytesPerToken != 256 {
		t.Errorf("info %+v", info)
	}
	for kv, want := range map[string]int64{"bf16": 256, "int8": 2 * 2 * 2 * (16 + 4), "int4": 2 * 2 * 2 * (8 + 4), "f32": 512} {
		mk, err := Load(context.Background(), dir, Options{KVCache: kv})
		if err != nil {
			t.Fatal(err)
		}
		if got := mk.Info().KVBytesPerToken; got != want {
			t.Errorf("KVCache %q: %d bytes per token, want %d", kv, got, want)
		}
		if got := mk.Info().KVCache; got != kv {
			t.Errorf("KVCache %q: Info says %q", kv, got)
		}
		mk.Close()
	}
	if _, err := Load(context.Background(), dir, Options{KVCache: "fp8"}); err == nil || !strings.Contains(err.Error(), "KVCache") {
		t.Errorf("KVCache fp8: error %v", err)
	}
	if m.Policy().Mode != Loose {
		t.Errorf("default policy not kept")
	}
	res, err := m.Moderate(context.Background(), []Message{{Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi there"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 2 || res.Tokens[0].Text != "hi" || res.Tokens[1].Text != " there" {
		t.Errorf("tokens %+v", res.Tokens)
	}
}

func TestEmbeddedTokenizerHash(t *testing.T) {
	b, _, err := tokenizer.Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != tokenizer.Qwen3SHA256 {
		t.Fatalf("embedded tokenizer.json has sha256 %x, Load's fast path expects %s", sum, tokenizer.Qwen3SHA256)
	}
}

func TestLoadRefusesIncompleteFolders(t *testing.T) {
	t.Run("missing head", func(t *testing.T) {
		dir := writeTinyFolder(t, "query_category_head.weight")
		_, err := Load(context.Background(), dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "query_category_head.weight") || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("error %v, want one naming the missing query_category_head.weight", err)
		}
	})
	t.Run("missing tokenizer", func(t *testing.T) {
		dir := writeTinyFolder(t)
		if err := os.Remove(filepath.Join(dir, "tokenizer.json")); err != nil {
			t.Fatal(err)
		}
		_, err := Load(context.Background(), dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "tokenizer.json is missing") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("bad policy", func(t *testing.T) {
		_, err := wrap(tinyModel(t, "f32", nil).net, nil, Options{Policy: Policy{Thresholds: map[string]float32{"Weather": 0.5}}})
		if err == nil || !strings.Contains(err.Error(), `unknown category "Weather"`) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("no folder", func(t *testing.T) {
		if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "nope"), Options{}); err == nil {
			t.Fatal("loaded a missing folder")
		}
	})
}

// Info reports the model's labels as guard.Labels, copies the caller may
// change without touching the model.
func TestInfoLabels(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	l, want := m.Info().Labels, m.net.Labels
	if !slices.Equal(l.ResponseRisk, want.ResponseRisk) || !slices.Equal(l.ResponseCategory, want.ResponseCategory) ||
		!slices.Equal(l.QueryRisk, want.QueryRisk) || !slices.Equal(l.QueryCategory, want.QueryCategory) {
		t.Fatalf("Info().Labels = %+v, want %+v", l, *want)
	}
	l.ResponseRisk[0] = "changed"
	if m.net.Labels.ResponseRisk[0] == "changed" {
		t.Fatal("Info().Labels shares the model's slices")
	}
}

// TestLoadHubID loads a model by its hub id from the local cache (laid out
// as `streamguard pull` and huggingface_hub write it), and refuses an id the
// cache lacks with the command that fetches it, without any network.
func TestLoadHubID(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1") // any request would fail
	const commit = "0123456789abcdef0123456789abcdef01234567"
	repo := filepath.Join(cache, "models--Org--Guard-Tiny")
	if _, err := synth.Generate(filepath.Join(repo, "snapshots", commit), synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"Org/Guard-Tiny", "Org/Guard-Tiny@" + commit} {
		m, err := Load(context.Background(), id, Options{})
		if err != nil {
			t.Fatalf("Load(%q): %v", id, err)
		}
		if m.Info().Layers != 2 {
			t.Errorf("Load(%q): %+v", id, m.Info())
		}
		m.Close()
	}
	_, err := Load(context.Background(), "Org/Missing", Options{})
	if err == nil || !strings.Contains(err.Error(), "streamguard pull Org/Missing") || !strings.Contains(err.Error(), cache) {
		t.Errorf("missing id: %v", err)
	}
	// A path that does not exist is a missing folder, not a hub id.
	_, err = Load(context.Background(), "./Org/Guard-Tiny", Options{})
	if err == nil || strings.Contains(err.Error(), "pull") {
		t.Errorf("missing path: %v", err)
	}
}
