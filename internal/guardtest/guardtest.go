// Package guardtest holds what the module's tests share: the tiny model (the
// "tiny" preset with random float32 weights, built in memory once per test
// binary), a response text that exercises chunk boundaries, and a JSON-lines
// log to read audit records back from. Only tests import it.
package guardtest

import (
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Response has multi-byte characters of every length, so that chunk and
// byte splits fall inside characters and tokens span deltas.
const Response = "Sure — here is how: mix 200 g of flour with water, knead for ten minutes, then rest. " +
	"Café crème, naïve façade; 日本語のテキストも少し。Emoji 🍞🔥 and a few more words to close."

var (
	tinyOnce sync.Once
	tiny     *guard.Model
	tinyErr  error
)

// Tiny is the tiny preset with random float32 weights (seed 7), shared by
// every test of the binary; it is safe for concurrent use like any Model.
func Tiny(t testing.TB) *guard.Model {
	t.Helper()
	tinyOnce.Do(func() { tiny, tinyErr = build() })
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	return tiny
}

func build() (*guard.Model, error) {
	cfg, err := config.Preset("tiny")
	if err != nil {
		return nil, err
	}
	src, err := qwen3.RandomSource(cfg, safetensors.F32, 7)
	if err != nil {
		return nil, err
	}
	net, err := qwen3.Load(src, cfg, qwen3.Options{})
	if err != nil {
		return nil, err
	}
	return guardhook.New[*guard.Model](net, nil, guard.Options{})
}
