// Package guardhook hands the module's own tools what the public guard API
// keeps out of its surface: the transformer and tokenizer behind a
// *guard.Model, and a Model built around a network held in memory (random
// weights for tests and benchmarks). The guard package registers the hooks
// in its init, so any program that holds a *guard.Model has them; the values
// are typed any here because guard imports this package, not the reverse.
package guardhook

import (
	"context"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Hooks is what guard registers.
type Hooks struct {
	Network   func(m any) *qwen3.Model
	Tokenizer func(m any) *tokenizer.Tokenizer
	New       func(net *qwen3.Model, tok *tokenizer.Tokenizer, opts any) (any, error)
	// ParseDevice reads a guard.Options.Device value.
	ParseDevice func(s string) (kind string, ordinal int, err error)
	// Forward runs id sequences on a *guard.Model's device.
	Forward func(m any, ids [][]int) ([]qwen3.Output, error)
	// LoadForUpload is guard.Load for a network that the caller uploads
	// to a GPU itself.
	LoadForUpload func(ctx context.Context, dir string, opts any) (any, error)
	// Weights are the mapped files behind a *guard.Model (nil for a
	// network held in memory).
	Weights func(m any) *qwen3.Weights
	// HeldOverrun reports a guard.ErrContextLength for text the stream
	// would only have held back.
	HeldOverrun func(err error) bool
	// Messages converts tokenizer messages to a []guard.Message, and
	// ChatMessages a []guard.Message back ("developer" read as "system").
	Messages     func(msgs []tokenizer.Message) any
	ChatMessages func(msgs any) []tokenizer.Message
}

var hooks Hooks

// Register is called once, by guard's init.
func Register(h Hooks) { hooks = h }

// Network is the transformer behind m, a *guard.Model, for tools that need
// raw logits or hidden states.
func Network(m any) *qwen3.Model { return hooks.Network(m) }

// Weights are the mapped checkpoint and repacked-weights file behind m, a
// *guard.Model loaded from a folder; nil otherwise.
func Weights(m any) *qwen3.Weights { return hooks.Weights(m) }

// Forward runs each id sequence from an empty KV cache, in one batch on
// the device m (a *guard.Model) runs on — the CPU engine or a GPU — and
// returns each sequence's head logits and final normed hidden states. It is
// how tools that want hidden states (forward, train-heads) honour
// --device, where Network is the CPU engine alone.
func Forward(m any, ids [][]int) ([]qwen3.Output, error) { return hooks.Forward(m, ids) }

// LoadForUpload loads the model in dir as guard.Load does (opts is a
// guard.Options; M is *guard.Model), but with its network loaded for a GPU
// backend that the caller runs (qwen3.Options.UploadOnly: AWQ projections
// are not repacked for the CPU kernels): bench --device cuda measures the
// load a GPU deployment does. The model itself cannot judge.
func LoadForUpload[M any](ctx context.Context, dir string, opts any) (M, error) {
	var zero M
	v, err := hooks.LoadForUpload(ctx, dir, opts)
	if err != nil {
		return zero, err
	}
	return v.(M), nil
}

// HeldOverrun reports whether err is a guard.ErrContextLength for text a
// stream would only have held back (a word still growing) that would not
// fit: the stream took none of it, and lost nothing it had judged, so a
// server can keep it (where text that would have been tokenized and
// judged leaves a hole in what was said).
func HeldOverrun(err error) bool { return hooks.HeldOverrun(err) }

// Tokenizer is the tokenizer of m, a *guard.Model.
func Tokenizer(m any) *tokenizer.Tokenizer { return hooks.Tokenizer(m) }

// New wraps an already built network with tok (nil: the embedded Qwen3
// tokenizer); opts is a guard.Options and M is *guard.Model:
//
//	m, err := guardhook.New[*guard.Model](net, nil, guard.Options{})
func New[M any](net *qwen3.Model, tok *tokenizer.Tokenizer, opts any) (M, error) {
	var zero M
	v, err := hooks.New(net, tok, opts)
	if err != nil {
		return zero, err
	}
	return v.(M), nil
}

// Messages converts the tokenizer's messages to guard's: M is
// guard.Message.
func Messages[M any](msgs []tokenizer.Message) []M { return hooks.Messages(msgs).([]M) }

// ChatMessages converts guard's messages ([]guard.Message) to the
// tokenizer's.
func ChatMessages[M any](msgs []M) []tokenizer.Message { return hooks.ChatMessages(msgs) }

// ParseDevice reads a device name as guard.Options.Device does: kind is
// "cpu", "auto" or "cuda", ordinal the GPU's number (cuda:N).
func ParseDevice(s string) (kind string, ordinal int, err error) { return hooks.ParseDevice(s) }
