package guard

import (
	"context"
	"errors"
	"fmt"
)

// Result is the moderation of one conversation: the verdict on its last
// user turn and, when an assistant turn follows, a verdict per judged
// response token and the decision.
type Result struct {
	Prompt *PromptVerdict `json:"prompt"`
	// Tokens are the verdicts on the response's judged tokens.
	Tokens []TokenVerdict `json:"tokens,omitempty"`
	// FlaggedIndex is the response token index at which the response was
	// flagged (the online debounce rule), -1 if never.
	FlaggedIndex int `json:"flagged_index"`
	// Decision is the official final rule over all response tokens; nil
	// without a response.
	Decision *Decision `json:"decision,omitempty"`
}

// Moderate judges a whole conversation at once, as the official usage
// does: msgs end with a user turn, optionally followed by one assistant
// turn. The prompt verdict is read at the last user turn's <|im_end|>; the
// assistant's content tokens are judged one by one (the header, empty think
// block and closing <|im_end|> are fed, not judged). policy nil means the
// model's default.
func (m *Model) Moderate(ctx context.Context, msgs []Message, policy *Policy) (*Result, error) {
	if len(msgs) == 0 {
		return nil, errors.New("guard: empty conversation: no messages")
	}
	if err := m.usable(); err != nil {
		return nil, err
	}
	c, err := m.tok.RenderConversation(chatMessages(msgs))
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	s := m.NewStream()
	defer s.Close()
	if policy != nil {
		if err := s.SetPolicy(*policy); err != nil {
			return nil, err
		}
	}
	if err := s.queueConversation(c); err != nil {
		return nil, err
	}
	r, err := s.run(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Prompt: r.Prompt, FlaggedIndex: -1}
	if !c.Response {
		return res, nil
	}
	res.Tokens = r.Tokens
	if i, ok := s.Flagged(); ok {
		res.FlaggedIndex = i
	}
	d := s.Decision()
	res.Decision = &d
	return res, nil
}
