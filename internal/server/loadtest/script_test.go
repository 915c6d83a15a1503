package loadtest

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/guardtest"
)

func tinyModel(t *testing.T) *guard.Model { return guardtest.Tiny(t) }

// TestScripts: the scripts are deterministic, their text pieces encode
// back to their ids when streamed (what the text-mode workers rely on),
// and the reference verdicts equal a stream fed by text.
func TestScripts(t *testing.T) {
	m := tinyModel(t)
	a := makeScripts(m, 3, 8, 20, 1)
	b := makeScripts(m, 3, 8, 20, 1)
	for i := range a {
		if a[i].prompt != b[i].prompt || !slices.Equal(a[i].ids, b[i].ids) {
			t.Fatalf("script %d differs between runs with one seed", i)
		}
		if len(a[i].ids) < 20 {
			t.Fatalf("script %d has %d tokens", i, len(a[i].ids))
		}
		enc := guardhook.Tokenizer(m).NewStreamEncoder()
		var ids []int
		for _, p := range a[i].pieces {
			ids = append(ids, enc.Write(p)...)
		}
		ids = append(ids, enc.Flush()...)
		if !slices.Equal(ids, a[i].ids) {
			t.Fatalf("script %d: pieces encode to %v, want %v", i, ids, a[i].ids)
		}
	}
	if err := solo(context.Background(), m, a); err != nil {
		t.Fatal(err)
	}
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(context.Background(), []guard.Message{{Role: "user", Content: a[0].prompt}}); err != nil {
		t.Fatal(err)
	}
	var got []guard.TokenVerdict
	for _, p := range a[0].pieces {
		tvs, err := s.AppendText(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tvs...)
	}
	tvs, err := s.FlushText(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, tvs...)
	w := &worker{}
	w.check(a[0], got, true)
	w.check(a[0], got[:5], false)
	if len(w.mismatches) != 0 {
		t.Fatalf("mismatches %v", w.mismatches)
	}
	got[3].RiskProbs[0] = math.Nextafter32(got[3].RiskProbs[0], 2)
	w.check(a[0], got, true)
	if len(w.mismatches) != 1 {
		t.Fatalf("a one-ulp difference was not caught: %v", w.mismatches)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(v, 0.5); p != 5 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(v, 0.99); p != 10 {
		t.Errorf("p99 %v", p)
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}
