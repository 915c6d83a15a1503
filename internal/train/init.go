package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// InitRandom fills h from the seed as torch.nn.Linear initialises its
// weights (uniform in ±1/√fan_in) and the RMSNorm weight with ones.
func (h *Head) InitRandom(seed uint64, p Path) {
	r := newRNG(seed, "init/"+string(p))
	fill := func(w []float32, fanIn int) {
		bound := float32(1 / math.Sqrt(float64(fanIn)))
		for i := range w {
			w[i] = r.uniform() * bound
		}
	}
	fill(h.Pre, h.Hidden)
	for i := range h.Norm {
		h.Norm[i] = 1
	}
	fill(h.Risk, h.Inner)
	fill(h.Category, h.Inner)
}

// headNames are the checkpoint tensors of one path: pre, norm, risk,
// category.
func headNames(p Path) [4]string {
	if p == Query {
		return [4]string{"query_risk_level_category_pre.weight", "query_risk_level_category_layernorm.weight",
			"query_risk_level_head.weight", "query_category_head.weight"}
	}
	return [4]string{"risk_level_category_pre.weight", "risk_level_category_layernorm.weight",
		"risk_level_head.weight", "category_head.weight"}
}

// initExisting starts h from the source model's head of path p: pre, norm
// and risk head as they are, and the category rows of every category whose
// name the source has (the others keep h's random rows). It returns the
// categories taken over.
func (h *Head) initExisting(src *safetensors.Set, p Path, srcCategories, categories []string) ([]string, error) {
	names := headNames(p)
	read := func(name string, n int) ([]float32, error) {
		t, err := src.Tensor(name)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		if len(v) != n {
			return nil, fmt.Errorf("tensor %q has %d elements, want %d", name, len(v), n)
		}
		return v, nil
	}
	pre, err := read(names[0], len(h.Pre))
	if err != nil {
		return nil, err
	}
	norm, err := read(names[1], len(h.Norm))
	if err != nil {
		return nil, err
	}
	risk, err := read(names[2], len(h.Risk))
	if err != nil {
		return nil, err
	}
	cat, err := read(names[3], len(srcCategories)*h.Inner)
	if err != nil {
		return nil, err
	}
	copy(h.Pre, pre)
	copy(h.Norm, norm)
	copy(h.Risk, risk)
	var kept []string
	for i, name := range categories {
		if j := slices.Index(srcCategories, name); j >= 0 {
			copy(h.Category[i*h.Inner:(i+1)*h.Inner], cat[j*h.Inner:(j+1)*h.Inner])
			kept = append(kept, name)
		}
	}
	return kept, nil
}
