package redteam

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

var update = flag.Bool("update", false, "rewrite testdata/redteam/expected.jsonl")

// TestLayouts checks every case at every surface against the invariants of
// Layout and the committed positions (go test -update rewrites them).
func TestLayouts(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 50 {
		t.Fatalf("%d cases, want at least 50", len(cases))
	}
	var all []Positions
	for _, c := range cases {
		for _, s := range Surfaces {
			p, err := Layout(tok, c, s)
			if err != nil {
				t.Errorf("%s at %s: %v", c.ID, s, err)
			}
			all = append(all, p)
		}
	}
	if *update {
		f, err := os.Create(filepath.Join(Dir(), "expected.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		enc := json.NewEncoder(f)
		for _, p := range all {
			if err := enc.Encode(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	want, err := Expected()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(all) {
		t.Errorf("expected.jsonl has %d entries, the set gives %d", len(want), len(all))
	}
	for _, p := range all {
		if w, ok := want[[2]string{p.ID, p.Surface}]; !ok || w != p {
			t.Errorf("%s at %s: positions %+v, expected %+v", p.ID, p.Surface, p, w)
		}
	}
}
