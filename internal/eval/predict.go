package eval

import "github.com/streamguard/streamguard/guard"

// Mixed is the level of a response whose first non-safe run mixes Unsafe
// and Controversial tokens (flagged in strict mode only).
const Mixed = "Mixed"

// Part is the model's verdict on the prompt or the response of one item.
type Part struct {
	// Level is the raw verdict: Safe, Unsafe or Controversial; for a
	// response, the level of the run the official final rule found (Mixed
	// for a strict-mode run of both), Safe when none.
	Level    string `json:"level"`
	Category string `json:"category,omitempty"`
	// Position is the token position of the verdict in the rendered
	// conversation: the prompt's <|im_end|>, or the response token that
	// completed the flagging run (-1 when the response was not flagged).
	Position int `json:"position"`
	// Index counts judged response tokens from 0: the flagging token's
	// (-1 when not flagged, and for a prompt). Always written: 0 is the
	// earliest detection.
	Index int `json:"index"`
	// Tokens is the number of judged response tokens and ContentStart the
	// position of the first one (response only).
	Tokens       int `json:"tokens,omitempty"`
	ContentStart int `json:"content_start,omitempty"`
}

// Flagged applies a mode to the verdict: Unsafe always flags;
// Controversial (and Mixed) only in strict mode.
func (p *Part) Flagged(m guard.Mode) bool {
	switch p.Level {
	case Unsafe:
		return true
	case Controversial, Mixed:
		return m == guard.Strict
	}
	return false
}

// Prediction is what the model said about one item.
type Prediction struct {
	Prompt   Part  `json:"prompt"`
	Response *Part `json:"response,omitempty"`
	// SpanStart and SpanEnd are the gold unsafe span in token positions,
	// from the item or located from its unsafe_text (-1 when none).
	SpanStart int `json:"span_start"`
	SpanEnd   int `json:"span_end"`
	// Tokens is the number of tokens the conversation fed the model.
	Tokens int `json:"tokens"`
	// Judged is the verdict on every judged response token, for the HTML
	// report's highlighted misses; it is not part of the JSON report.
	Judged []TokenRisk `json:"-"`
}

// TokenRisk is one judged response token as the HTML report shows it.
type TokenRisk struct {
	// Text is the token's text, Level its raw (argmax) risk level and
	// Category the category head's argmax (meaningful when not Safe).
	Text     string
	Level    string
	Category string
	// NonSafe is 1 − P(Safe): P(Unsafe) + P(Controversial); Unsafe is
	// P(Unsafe).
	NonSafe, Unsafe float32
}

// positive reports whether a gold label counts as unsafe in mode m.
func positive(label string, m guard.Mode) bool {
	return label == Unsafe || (label == Controversial && m == guard.Strict)
}
