package guard

import (
	"strings"
	"testing"
)

// verdictOf builds a response verdict with risk index r (0 Safe, 1 Unsafe,
// 2 Controversial) in category "Violent" unless cat is given.
func verdictOf(r int, probs []float32, cat string) Verdict {
	if cat == "" {
		cat = "Violent"
	}
	if probs == nil {
		probs = []float32{0, 0, 0}
		probs[r] = 1
	}
	return Verdict{Risk: []string{"Safe", "Unsafe", "Controversial"}[r], RiskIndex: r, RiskProbs: probs, Category: cat}
}

// runPolicy feeds a sequence of risk indexes ("S", "U", "C") and returns
// the index the online rule flagged (-1) and the final decision.
func runPolicy(p Policy, seq string) (int, Decision) {
	r := newResponseState()
	for _, c := range seq {
		v := verdictOf(strings.IndexRune("SUC", c), nil, "")
		r.add(&p, p.classify(&v, 1, 2), v.Category)
	}
	return r.flaggedAt, r.decision(&p)
}

func TestDebounceAndDecision(t *testing.T) {
	strict, loose := Policy{Mode: Strict}, Policy{Mode: Loose}
	for _, tc := range []struct {
		name     string
		p        Policy
		seq      string
		flagged  int
		decision Decision
	}{
		{"single unsafe token is not enough", strict, "SUSUS", -1, Decision{Risk: "Safe", Index: -1, Tokens: 5}},
		{"unsafe pair flags at the second", strict, "SSUUS", 3, Decision{Flagged: true, Risk: "Unsafe", Level: "Unsafe", Index: 3, Category: "Violent", Tokens: 5}},
		{"controversial pair, strict", strict, "SCCS", 2, Decision{Flagged: true, Risk: "Unsafe", Level: "Controversial", Index: 2, Category: "Violent", Tokens: 4}},
		{"controversial pair, loose", loose, "SCCS", -1, Decision{Risk: "Safe", Level: "Controversial", Index: 2, Category: "Violent", Tokens: 4}},
		// Official final rule: an Unsafe pair anywhere wins over an earlier
		// Controversial pair; the online flag fires at the first run.
		{"unsafe pair preferred by the decision", strict, "CCSUU", 1, Decision{Flagged: true, Risk: "Unsafe", Level: "Unsafe", Index: 4, Category: "Violent", Tokens: 5}},
		// A mixed pair is two non-safe tokens in strict mode: the
		// decision agrees with the online flag that cut the stream.
		{"mixed pair, strict", strict, "UC", 1, Decision{Flagged: true, Risk: "Unsafe", Level: "Mixed", Index: 1, Category: "Violent", Tokens: 2}},
		{"mixed pair, loose", loose, "UC", -1, Decision{Risk: "Safe", Index: -1, Tokens: 2}},
		{"debounce 3", Policy{Debounce: 3}, "UUSUUU", 5, Decision{Flagged: true, Risk: "Unsafe", Level: "Unsafe", Index: 5, Category: "Violent", Tokens: 6}},
		{"debounce 1", Policy{Debounce: 1}, "SSU", 2, Decision{Flagged: true, Risk: "Unsafe", Level: "Unsafe", Index: 2, Category: "Violent", Tokens: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, d := runPolicy(tc.p, tc.seq)
			if f != tc.flagged || d != tc.decision {
				t.Errorf("%s: flagged %d, decision %+v; want %d, %+v", tc.seq, f, d, tc.flagged, tc.decision)
			}
		})
	}
}

func TestThresholdsAndBlock(t *testing.T) {
	p := Policy{Thresholds: map[string]float32{"Violent": 0.5}}
	// Argmax Safe but P(Unsafe)+P(Controversial) = 0.6 ≥ 0.5: unsafe.
	v := verdictOf(0, []float32{0.4, 0.3, 0.3}, "")
	if l := p.classify(&v, 1, 2); l != levelUnsafe {
		t.Errorf("strict threshold: level %d, want unsafe", l)
	}
	// Loose mode counts only P(Unsafe) = 0.3 < 0.5.
	p.Mode = Loose
	if l := p.classify(&v, 1, 2); l != levelSafe {
		t.Errorf("loose threshold: level %d, want safe", l)
	}
	// Another category keeps the argmax rule.
	v = verdictOf(1, []float32{0.2, 0.45, 0.35}, "PII")
	if l := p.classify(&v, 1, 2); l != levelUnsafe {
		t.Errorf("unlisted category: level %d, want unsafe", l)
	}
	// Block lists the only categories that can flag.
	p = Policy{Block: []string{"Violent"}}
	if l := p.classify(&v, 1, 2); l != levelSafe {
		t.Errorf("category outside Block: level %d, want safe", l)
	}
}

func TestPolicyValidation(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	for _, p := range []Policy{
		{Mode: 7}, {Debounce: -1},
		{Thresholds: map[string]float32{"Nope": 0.5}},
		{Thresholds: map[string]float32{"Violent": 1.5}},
		{Block: []string{"Nope"}},
	} {
		if err := s.SetPolicy(p); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
	if err := s.SetPolicy(Policy{Mode: Loose, Debounce: 3, Thresholds: map[string]float32{"Jailbreak": 0.9}}); err != nil {
		t.Error(err)
	}
	if _, err := ParseMode("medium"); err == nil {
		t.Error("ParseMode accepted medium")
	}
}

// TestLevelName: Verdict.Level spells the level the policy applied with the
// model's own label when the policy agrees with the likeliest level, and by
// the level's name where a threshold or the block list decided otherwise —
// so that Level differs from Risk exactly when the policy overruled the
// argmax. (The lower-case labels test the mechanism alone: Load refuses a
// model whose risk levels are not spelled Safe, Unsafe and Controversial,
// TestLoadRefusesRiskLevels.)
func TestLevelName(t *testing.T) {
	const cont = 2
	for _, c := range []struct {
		v    Verdict
		l    level
		want string
	}{
		{Verdict{Risk: "unsafe", RiskIndex: 1}, levelUnsafe, "unsafe"},
		{Verdict{Risk: "Safe", RiskIndex: 0}, levelSafe, "Safe"},
		{Verdict{Risk: "Safe", RiskIndex: 0}, levelUnsafe, Unsafe}, // a threshold crossed
		{Verdict{Risk: "unsafe", RiskIndex: 1}, levelSafe, Safe},   // below a threshold, or not blocked
		{Verdict{Risk: "controversial", RiskIndex: cont}, levelControversial, "controversial"},
		{Verdict{Risk: "controversial", RiskIndex: cont}, levelUnsafe, Unsafe}, // a threshold crossed
	} {
		if got := c.l.name(&c.v, cont); got != c.want {
			t.Errorf("%v for %+v: %q, want %q", c.l, c.v, got, c.want)
		}
	}
}
