package guard

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestLoadRefusesRiskLevels: the policies find Unsafe and Controversial in
// a risk map by name. A name they did not know would leave the unsafe
// index at -1, and a threshold would then score P(Unsafe) as 0: a verdict
// of P(unsafe) = 0.99 would pass as Safe. So a map is read as Safe (index
// 0), Unsafe and Controversial, in any order of the last two and in any
// case (renamed to the exported names), and anything else is refused at
// load.
func TestLoadRefusesRiskLevels(t *testing.T) {
	for _, c := range []struct {
		name            string
		response, query []string
		ok              bool
	}{
		{"official", []string{"Safe", "Unsafe", "Controversial"}, nil, true},
		{"unsafe and controversial swapped", []string{"Safe", "Controversial", "Unsafe"}, []string{"Safe", "Controversial", "Unsafe"}, true},
		{"lower-case unsafe", []string{"Safe", "unsafe", "Controversial"}, nil, true},
		{"upper case and spaces in the query map", nil, []string{"Safe", "UNSAFE", " controversial"}, true},
		{"another name for unsafe", []string{"Safe", "Harmful", "Controversial"}, nil, false},
		{"no controversial", []string{"Safe", "Unsafe"}, nil, false},
		{"a fourth level", []string{"Safe", "Unsafe", "Controversial", "Severe"}, nil, false},
		{"unsafe twice", []string{"Safe", "Unsafe", "Unsafe"}, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Preset("tiny")
			if err != nil {
				t.Fatal(err)
			}
			if c.response != nil {
				cfg.ResponseRiskLevelMap, cfg.NumRiskLevel = config.SliceToMap(c.response), len(c.response)
			}
			if c.query != nil {
				cfg.QueryRiskLevelMap, cfg.NumQueryRiskLevel = config.SliceToMap(c.query), len(c.query)
			}
			src, err := qwen3.RandomSource(cfg, safetensors.F32, 7)
			if err != nil {
				t.Fatal(err)
			}
			net, err := qwen3.Load(src, cfg, qwen3.Options{})
			if err != nil {
				t.Fatal(err)
			}
			m, err := wrap(net, nil, Options{Policy: Policy{Thresholds: map[string]float32{"Violent": 0.5}}})
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				if l := net.Labels.ResponseRisk; m.unsafeIdx != indexOf(l, Unsafe) || m.unsafeIdx < 1 || m.contIdx < 1 || m.queryUnsafeIdx < 1 || m.queryContIdx < 1 {
					t.Errorf("indexes %d %d %d %d for %q", m.unsafeIdx, m.contIdx, m.queryUnsafeIdx, m.queryContIdx, l)
				}
				for _, l := range [][]string{net.Labels.ResponseRisk, net.Labels.QueryRisk} {
					if l[0] != Safe || !slices.Contains(l, Unsafe) || !slices.Contains(l, Controversial) {
						t.Errorf("levels %q not renamed to the exported names", l)
					}
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "guard: ") || !strings.Contains(err.Error(), "risk_level_map") || !strings.Contains(err.Error(), `"Unsafe"`) {
				t.Fatalf("loaded, or refused with %v; want an error naming the map and the levels it needs", err)
			}
			t.Log(err)
		})
	}
}

// TestLoadRefusesRiskLevelsFromFolder: the same refusal through Load, from
// a config.json whose response risk map names an unsafe level the
// policies do not know (which config.json's own checks admit: they need
// only "Safe" at index 0).
func TestLoadRefusesRiskLevelsFromFolder(t *testing.T) {
	dir := writeTinyFolder(t)
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ResponseRiskLevelMap = map[string]string{"0": "Safe", "1": "Harmful", "2": "Controversial"}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), dir, Options{})
	if err == nil {
		m.Close()
		t.Fatal("loaded a model whose response risk map names \"Harmful\"")
	}
	if !strings.Contains(err.Error(), "response_risk_level_map") {
		t.Fatalf("error %v, want one naming response_risk_level_map", err)
	}
}
