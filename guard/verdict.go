package guard

import (
	"math"

	"github.com/streamguard/streamguard/internal/kernels"
)

// Verdict is one head pair's reading at one position: the risk level and
// category with their softmax probabilities. Category is meaningful only
// when the risk is not Safe (the category heads were trained on unsafe and
// controversial samples only).
type Verdict struct {
	Risk          string    `json:"risk"`
	RiskIndex     int       `json:"risk_index"`
	RiskProb      float32   `json:"risk_prob"`
	RiskProbs     []float32 `json:"risk_probs"`
	Category      string    `json:"category"`
	CategoryIndex int       `json:"category_index"`
	CategoryProb  float32   `json:"category_prob"`
	CategoryProbs []float32 `json:"category_probs"`
	// Level is the risk level the stream's policy applied. It is Risk
	// unless a threshold on the category decided (Policy.Thresholds): then
	// Unsafe when the threshold was crossed (whatever the likeliest level),
	// else Safe; and Safe for a category the policy does not block
	// (Policy.Block).
	Level string `json:"level"`
}

// PromptVerdict is the verdict on a user turn, read from the query heads at
// its closing <|im_end|>.
type PromptVerdict struct {
	Verdict
	// Position is the index of that <|im_end|> in the stream.
	Position int `json:"position"`
	// Flagged applies the stream's policy: Unsafe, or Controversial in
	// strict mode, subject to thresholds and blocked categories.
	Flagged bool `json:"flagged"`
	// Turns, with Policy.EveryTurn, are the verdicts of every user turn of
	// the prompt, in order, the last included (their own Turns empty).
	Turns []PromptVerdict `json:"turns,omitempty"`
}

// TokenVerdict is the verdict on one judged token of an assistant response:
// its content, and with thinking its reasoning. The scaffold around them
// (assistant header, empty think block, closing <|im_end|>) is fed but never
// judged, so it never has a TokenVerdict.
type TokenVerdict struct {
	// Index counts the judged tokens of the current response from 0.
	Index int `json:"index"`
	// Position is the token's position in the stream.
	Position int    `json:"position"`
	ID       int    `json:"id"`
	Text     string `json:"text"`
	Verdict
	// NonSafe reports that the token counts as non-safe under the policy.
	NonSafe bool `json:"non_safe"`
	// Flagged is true on the one token at which the response became
	// flagged (it completes the debounce run).
	Flagged bool `json:"flagged,omitempty"`
}

// newVerdict turns a head pair's logits into a verdict.
func newVerdict(riskLogits, catLogits []float32, riskLabels, catLabels []string) Verdict {
	rp := softmax(riskLogits)
	cp := softmax(catLogits)
	ri, ci := argmax(rp), argmax(cp)
	return Verdict{
		Risk: riskLabels[ri], RiskIndex: ri, RiskProb: rp[ri], RiskProbs: rp,
		Category: catLabels[ci], CategoryIndex: ci, CategoryProb: cp[ci], CategoryProbs: cp,
	}
}

func softmax(logits []float32) []float32 {
	p := append([]float32(nil), logits...)
	kernels.Softmax(p)
	return p
}

// argmax returns the first index of the largest value, as torch.max does;
// NaN never wins.
func argmax(v []float32) int {
	best, bi := float32(math.Inf(-1)), 0
	for i, x := range v {
		if x > best {
			best, bi = x, i
		}
	}
	return bi
}

// The risk levels of Verdict.Risk and Decision.Risk, as the models' label
// maps spell them, and Mixed, a Decision.Level only: a strict-mode run of
// both Unsafe and Controversial tokens.
const (
	Safe          = "Safe"
	Controversial = "Controversial"
	Unsafe        = "Unsafe"
	Mixed         = "Mixed"
)
