package train

import (
	"context"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestExtractMatchesForwardAlone: the batched extraction (many
// conversations per forward, each fed only through its last wanted
// position) gives bitwise the hidden states of running each whole
// conversation alone, as Moderate does.
func TestExtractMatchesForwardAlone(t *testing.T) {
	for _, dtype := range []string{"bf16", "awq"} {
		m, err := guard.Load(context.Background(), tinyModel(t, dtype), guard.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := newRNG(1, "conversations")
		var convMsgs [][]tokenizer.Message
		for i := range 90 { // ~2,000 tokens: several forwards of batchTokens
			resp := 0
			if i%3 != 0 {
				resp = 1 + r.intn(12)
			}
			convMsgs = append(convMsgs, randomConversation(r, 3+r.intn(8), resp, r.intn(5) == 0))
		}
		c := newCorpus(t, m, convMsgs)
		X, positions := c.X, c.positions
		total := 0
		for _, p := range positions {
			total += len(p)
		}
		net := guardhook.Network(m)
		H := net.Hidden()
		if len(X) != total*H {
			t.Fatalf("%s: %d features, want %d rows of %d", dtype, len(X), total, H)
		}
		row := 0
		for i, msgs := range convMsgs {
			chat, err := guardhook.Tokenizer(m).RenderChat(msgs)
			if err != nil {
				t.Fatal(err)
			}
			out, err := net.Forward([]qwen3.Sequence{{Cache: net.NewCache(), IDs: chat.IDs}}, qwen3.ForwardOptions{Hidden: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range positions[i] {
				if !slices.Equal(X[row*H:(row+1)*H], out[0].Hidden[p]) {
					t.Fatalf("%s conversation %d position %d: batched feature differs from the conversation run alone", dtype, i, p)
				}
				row++
			}
		}
		m.Close()
	}
}

func TestFeatureCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	const rows, H = 5, 3
	x := make([]float32, rows*H)
	for i := range x {
		x[i] = float32(i) - 7.25
	}
	x[4] = float32(math.Inf(1))
	if got, stale, err := loadCache(dir, "k1", rows, H); got != nil || stale != nil || err != nil {
		t.Fatalf("empty cache: %v %v %v", got, stale, err)
	}
	if err := storeCache(dir, "k1", x, rows, H); err != nil {
		t.Fatal(err)
	}
	got, stale, err := loadCache(dir, "k1", rows, H)
	if err != nil || stale != nil || !slices.Equal(got, x) {
		t.Fatalf("round trip: %v %v %v", got, stale, err)
	}
	// A shape other than the plan's is stale, not an error.
	if _, stale, _ := loadCache(dir, "k1", rows+1, H); stale == nil || !strings.Contains(stale.Error(), "want F32 [6 3]") {
		t.Errorf("wrong shape: stale %v", stale)
	}
	// A file renamed to another key is stale.
	if err := os.Rename(cachePath(dir, "k1"), cachePath(dir, "k2")); err != nil {
		t.Fatal(err)
	}
	if _, stale, _ := loadCache(dir, "k2", rows, H); stale == nil || !strings.Contains(stale.Error(), `key "k1"`) {
		t.Errorf("renamed entry: stale %v", stale)
	}
	// A truncated file is stale.
	if err := os.WriteFile(cachePath(dir, "k3"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stale, _ := loadCache(dir, "k3", rows, H); stale == nil {
		t.Error("truncated entry accepted")
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left %s", e.Name())
		}
	}
}

// TestBackboneKey: the key ignores the heads (retraining reuses features)
// and changes with any backbone byte.
func TestBackboneKey(t *testing.T) {
	dir := tinyModel(t, "bf16")
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	k1, err := backboneKey(set, guardhook.Network(m).Config, modelBackbone(m))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := backboneKey(set, guardhook.Network(m).Config, modelBackbone(m))
	if k1 != k2 || len(k1) != 64 {
		t.Fatalf("keys %q, %q", k1, k2)
	}
	other, err := guard.Load(context.Background(), tinyModel(t, "awq"), guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oset, err := safetensors.OpenDir(tinyModel(t, "awq"))
	if err != nil {
		t.Fatal(err)
	}
	defer oset.Close()
	k3, _ := backboneKey(oset, guardhook.Network(other).Config, modelBackbone(other))
	if k3 == k1 {
		t.Fatal("bf16 and awq backbones share a key")
	}
}
