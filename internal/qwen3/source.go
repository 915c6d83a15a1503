package qwen3

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// Source supplies tensors by name: a safetensors folder, or tensors built
// in memory ([MapSource]).
type Source interface {
	Tensor(name string) (*safetensors.Tensor, error)
	Has(name string) bool
}

// MapSource is an in-memory [Source], for tests and benchmarks.
type MapSource map[string]*safetensors.Tensor

// Tensor implements [Source].
func (m MapSource) Tensor(name string) (*safetensors.Tensor, error) {
	t, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q is missing", name)
	}
	return t, nil
}

// Has implements [Source].
func (m MapSource) Has(name string) bool { _, ok := m[name]; return ok }

// Names lists the tensor names, sorted.
func (m MapSource) Names() []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// namer is implemented by sources that can list their tensors; Load then
// refuses tensors it did not use instead of silently dropping them.
type namer interface{ Names() []string }

// trackingSource records which tensors the loaders read.
type trackingSource struct {
	Source
	mu   sync.Mutex
	used map[string]bool
}

func (s *trackingSource) Tensor(name string) (*safetensors.Tensor, error) {
	s.mu.Lock()
	s.used[name] = true
	s.mu.Unlock()
	return s.Source.Tensor(name)
}

// unused returns the tensors of src that no loader read, except lm_head.*
// (the guard has no language-model head; one that is present is ignored).
func (s *trackingSource) unused() []string {
	n, ok := s.Source.(namer)
	if !ok {
		return nil
	}
	var out []string
	for _, name := range n.Names() {
		if !s.used[name] && !strings.HasPrefix(name, "lm_head.") {
			out = append(out, name)
		}
	}
	return out
}

// tensorWithShape fetches name and checks its shape exactly.
func tensorWithShape(src Source, name string, shape ...int) (*safetensors.Tensor, error) {
	if !src.Has(name) {
		return nil, fmt.Errorf("tensor %q is missing", name)
	}
	t, err := src.Tensor(name)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(t.Shape, shape) {
		return nil, fmt.Errorf("tensor %q has shape %v, want %v", name, t.Shape, shape)
	}
	return t, nil
}

// vectorF32 loads a 1-D tensor of length n converted to float32 (norm
// weights: small, read on every token, so widened once at load).
func vectorF32(src Source, name string, n int) ([]float32, error) {
	t, err := tensorWithShape(src, name, n)
	if err != nil {
		return nil, err
	}
	v, err := t.Float32s()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return v, nil
}
