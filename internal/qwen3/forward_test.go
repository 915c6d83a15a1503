package qwen3

import (
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestForwardMatchesReference checks the packed, cached forward against the
// float64 reference in ref_test.go. F32 weights: the only differences are
// float32 rounding in activations, so 1e-5 relative L2 is ample (observed
// values are printed). BF16 weights are widened exactly, so the bound is
// the same.
func TestForwardMatchesReference(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		t.Run(string(dt), func(t *testing.T) {
			tm := tiny(t, dt)
			ids := testIDs(37, 1)
			ref := refForward(t, tm.src, tm.cfg, ids)
			c := tm.m.NewCache()
			outs, err := tm.m.Forward([]Sequence{{Cache: c, IDs: ids}}, ForwardOptions{Hidden: true})
			if err != nil {
				t.Fatal(err)
			}
			o := outs[0]
			worst := map[string]float64{}
			for p := range ids {
				for name, pair := range map[string]struct {
					got  []float32
					want []float64
				}{
					"hidden": {o.Hidden[p], ref.hidden[p]}, "risk": {o.Risk[p], ref.risk[p]},
					"category": {o.Category[p], ref.cat[p]}, "query_risk": {o.QueryRisk[p], ref.qrisk[p]},
					"query_category": {o.QueryCategory[p], ref.qcat[p]},
				} {
					e := relL2(pair.got, pair.want)
					worst[name] = max(worst[name], e)
					if e > 1e-5 {
						t.Errorf("position %d %s: relative L2 error %.3g > 1e-5", p, name, e)
					}
				}
			}
			t.Logf("worst relative L2 over %d positions: %v", len(ids), worst)
		})
	}
}
