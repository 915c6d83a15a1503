package guard

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Mode decides what a Controversial verdict means.
type Mode int

const (
	// Strict counts Controversial as unsafe.
	Strict Mode = iota
	// Loose counts Controversial as safe.
	Loose
)

func (m Mode) String() string {
	switch m {
	case Strict:
		return "strict"
	case Loose:
		return "loose"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "strict" or "loose".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "strict":
		return Strict, nil
	case "loose":
		return Loose, nil
	}
	return 0, fmt.Errorf("guard: mode %q: want strict or loose", s)
}

// MarshalText writes the mode as String does, so that a Policy in JSON
// or another text format reads "strict" or "loose".
func (m Mode) MarshalText() ([]byte, error) {
	if m != Strict && m != Loose {
		return nil, fmt.Errorf("guard: mode %d: want strict or loose", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText reads what ParseMode reads.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// DefaultDebounce is the official run length: a response is flagged when two
// consecutive tokens are non-safe.
const DefaultDebounce = 2

// Policy turns verdicts into flags. The zero value is the official rule in
// strict mode.
type Policy struct {
	Mode Mode
	// Debounce is the number of consecutive non-safe tokens that flag a
	// response; 0 means DefaultDebounce.
	Debounce int
	// Thresholds maps a category name to a probability threshold τ that
	// replaces the argmax rule for verdicts of that category: the verdict
	// counts as Unsafe when P(Unsafe) (plus P(Controversial) in strict
	// mode) is at least τ, and as Safe otherwise. Categories not listed
	// keep the argmax rule. There is no official threshold; this is the
	// common third-party reading.
	Thresholds map[string]float32
	// Block, when not empty, lists the only categories that can flag;
	// non-safe verdicts of any other category count as safe.
	Block []string
	// EveryTurn judges every user turn of a prompt (a tool result the
	// template lays out as one included) at its own <|im_end|>, in the
	// context before it (what the guard said, or would have said,
	// when that turn was the newest), not only the last: the prompt is
	// flagged when any turn is, PromptVerdict.Turns lists them all, and
	// the verdict is the first flagged turn's when the last is not. It
	// costs nothing (the query heads run at every position) and is for a
	// gateway whose clients write the conversation's history themselves:
	// without it, text hidden in an earlier turn is read only as context
	// of the last. A chat that keeps a flagged turn in its history is then
	// refused on every later request.
	EveryTurn bool
}

// clone is p with its own map and slice: a Model or Stream keeps a
// policy the caller can no longer change, and hands out copies the
// caller may edit.
func (p Policy) clone() Policy {
	p.Thresholds = maps.Clone(p.Thresholds)
	p.Block = slices.Clone(p.Block)
	return p
}

// level is a verdict after the policy: safe, or the kind of non-safe run it
// belongs to.
type level int

const (
	levelSafe level = iota
	levelUnsafe
	levelControversial
)

// name is how Verdict.Level spells l for v: the model's own label when l
// is the level v's likeliest label stands for (no threshold or block list
// decided), else the level's name.
func (l level) name(v *Verdict, controversial int) string {
	natural := levelUnsafe
	switch v.RiskIndex {
	case 0:
		natural = levelSafe
	case controversial:
		natural = levelControversial
	}
	if l == natural {
		return v.Risk
	}
	return l.String()
}

// String is the level's name.
func (l level) String() string {
	switch l {
	case levelUnsafe:
		return Unsafe
	case levelControversial:
		return Controversial
	}
	return Safe
}

// check validates the policy against the model's category labels (the
// response's, then the query's). Its errors read "guard: policy: ...", as
// every error of the package's API starts with "guard: ", and an unknown
// category's lists the names the model knows.
func (p *Policy) check(categories ...[]string) error {
	if p.Mode != Strict && p.Mode != Loose {
		return fmt.Errorf("guard: policy: unknown mode %d (want Strict or Loose)", int(p.Mode))
	}
	if p.Debounce < 0 {
		return fmt.Errorf("guard: policy: debounce %d must be at least 1 (0 for the default %d)", p.Debounce, DefaultDebounce)
	}
	var names []string // each category once, in the heads' order
	for _, c := range categories {
		for _, name := range c {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	valid := func() string {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = strconv.Quote(n)
		}
		return "the model's categories are " + strings.Join(q, ", ")
	}
	// Sorted, so that a policy with several errors always reports the same.
	for _, name := range slices.Sorted(maps.Keys(p.Thresholds)) {
		t := p.Thresholds[name]
		if !slices.Contains(names, name) {
			return fmt.Errorf("guard: policy: threshold for unknown category %q; %s", name, valid())
		}
		if !(t >= 0 && t <= 1) {
			return fmt.Errorf("guard: policy: threshold %v for %q is outside [0, 1]", t, name)
		}
	}
	for _, name := range p.Block {
		if !slices.Contains(names, name) {
			return fmt.Errorf("guard: policy: blocked category %q is unknown; %s", name, valid())
		}
	}
	return nil
}

func (p *Policy) debounce() int {
	if p.Debounce <= 0 {
		return DefaultDebounce
	}
	return p.Debounce
}

// classify applies the policy to one verdict. unsafe and controversial are
// the indexes of those labels in the risk map (-1 if absent); any other
// non-zero index counts as unsafe.
func (p *Policy) classify(v *Verdict, unsafe, controversial int) level {
	if len(p.Block) > 0 && !slices.Contains(p.Block, v.Category) {
		return levelSafe
	}
	if t, ok := p.Thresholds[v.Category]; ok {
		var score float32
		if unsafe >= 0 {
			score += v.RiskProbs[unsafe]
		}
		if p.Mode == Strict && controversial >= 0 {
			score += v.RiskProbs[controversial]
		}
		if score >= t {
			return levelUnsafe
		}
		return levelSafe
	}
	switch {
	case v.RiskIndex == 0:
		return levelSafe
	case v.RiskIndex == controversial:
		return levelControversial
	}
	return levelUnsafe
}

// nonSafe reports whether a level counts toward a flag in this mode.
func (p *Policy) nonSafe(l level) bool {
	return l == levelUnsafe || (l == levelControversial && p.Mode == Strict)
}

// Decision is the outcome for one assistant response under the official
// final rule (the official evaluation's consecutive-unsafe scan): the first run of Debounce Unsafe
// tokens; failing that, the first run of Controversial tokens, which strict
// mode reports as Unsafe and loose mode as Safe.
type Decision struct {
	Flagged bool `json:"flagged"`
	// Risk is Unsafe when flagged, else Safe (after the mode mapping).
	Risk string `json:"risk"`
	// Level is the raw level of the run (Unsafe, Controversial, or Mixed
	// for a strict-mode run of both), or "" when no run was found.
	// In strict mode Flagged always agrees with the online flag.
	Level string `json:"level,omitempty"`
	// Index is the response token index that completes the run (-1 when
	// none), and Category the category there.
	Index    int    `json:"index"`
	Category string `json:"category,omitempty"`
	// Tokens is the number of response tokens judged.
	Tokens int `json:"tokens"`
}

// responseState tracks one assistant turn's runs as tokens arrive.
type responseState struct {
	n                  int // judged tokens
	run                int // consecutive non-safe (online rule)
	flaggedAt          int // first index the online rule flagged, -1
	flaggedCategory    string
	runU, runC         int
	unsafeAt, contAt   int // first index completing a run of each level, -1
	unsafeCat, contCat string
}

func newResponseState() responseState {
	return responseState{flaggedAt: -1, unsafeAt: -1, contAt: -1}
}

// add records the next judged token and reports whether it is the one that
// flags the response.
func (r *responseState) add(p *Policy, l level, category string) (flags bool) {
	i := r.n
	r.n++
	N := p.debounce()
	if p.nonSafe(l) {
		r.run++
	} else {
		r.run = 0
	}
	if r.run >= N && r.flaggedAt < 0 {
		r.flaggedAt, r.flaggedCategory = i, category
		flags = true
	}
	switch l {
	case levelUnsafe:
		r.runU, r.runC = r.runU+1, 0
	case levelControversial:
		r.runU, r.runC = 0, r.runC+1
	default:
		r.runU, r.runC = 0, 0
	}
	if r.runU >= N && r.unsafeAt < 0 {
		r.unsafeAt, r.unsafeCat = i, category
	}
	if r.runC >= N && r.contAt < 0 {
		r.contAt, r.contCat = i, category
	}
	return flags
}

func (r *responseState) decision(p *Policy) Decision {
	d := Decision{Risk: Safe, Index: -1, Tokens: r.n}
	switch {
	case r.unsafeAt >= 0:
		d = Decision{Flagged: true, Risk: Unsafe, Level: Unsafe, Index: r.unsafeAt, Category: r.unsafeCat, Tokens: r.n}
	case r.contAt >= 0 && p.Mode == Strict:
		d = Decision{Flagged: true, Risk: Unsafe, Level: Controversial, Index: r.contAt, Category: r.contCat, Tokens: r.n}
	case r.flaggedAt >= 0 && p.Mode == Strict:
		// A run mixing Unsafe and Controversial tokens: the official scan
		// looks for pure pairs only, but strict mode maps Controversial to
		// Unsafe before judging (the model card's strict mode treats a token that
		// is unsafe or controversial alike), and
		// the decision must agree with the online flag that cut the stream.
		d = Decision{Flagged: true, Risk: Unsafe, Level: Mixed, Index: r.flaggedAt, Category: r.flaggedCategory, Tokens: r.n}
	case r.contAt >= 0:
		d.Level, d.Index, d.Category = Controversial, r.contAt, r.contCat
	}
	return d
}
