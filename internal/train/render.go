package train

import (
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Conversation is an example rendered for the backbone, with the
// positions whose verdicts the guard reads.
type Conversation struct {
	// IDs are the rendered token ids up to the last judged position (the
	// hidden state of a position depends only on the ids up to it).
	IDs []int
	// PromptPos is the index of the <|im_end|> closing the last user turn.
	PromptPos int
	// ResponsePos are the positions of the judged tokens of the final
	// assistant turn, response token 0 first; empty without one.
	ResponsePos []int
}

// Render lays msgs out with the one chat scaffold
// (tokenizer.RenderConversation) and takes the judged positions from it,
// exactly as guard.Model.Moderate does: the prompt verdict at the last user
// turn's <|im_end|>, response verdicts on the assistant's content tokens up
// to, not including, the closing <|im_end|>. A test checks the positions
// against Moderate's.
func Render(tok *tokenizer.Tokenizer, msgs []tokenizer.Message) (*Conversation, error) {
	rc, err := tok.RenderConversation(msgs)
	if err != nil {
		return nil, err
	}
	c := &Conversation{PromptPos: rc.PromptEnd}
	for i := rc.JudgedStart; i < rc.JudgedEnd; i++ {
		c.ResponsePos = append(c.ResponsePos, i)
	}
	last := rc.PromptEnd
	if n := len(c.ResponsePos); n > 0 {
		last = c.ResponsePos[n-1]
	}
	c.IDs = rc.IDs[:last+1]
	return c, nil
}
