package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
)

// script is one conversation: a prompt and a response fed token by token,
// with the verdicts a solo run gives.
type script struct {
	prompt string
	ids    []int    // response token ids
	pieces []string // each id's text (ASCII, so each decodes alone)
	want   *guard.PromptVerdict
	tokens []guard.TokenVerdict // judged, in order
}

var words = strings.Fields(`the of and to in is you that it he was for on are as with his they at be this have from or one had by
word but not what all were we when your can said there use an each which she do how their if will up other about out many then them
these so some her would make like him into time has look two more write go see number no way could people my than first water been
call who oil its now find long down day did get come made may part tea bread river garden music window letter station morning
question answer history weather kitchen mountain planet engine orange silver market doctor teacher village bridge forest
ocean winter summer island machine pocket ticket camera button signal harbor lesson travel`)

// makeScripts builds n conversations deterministically from seed: prompts
// of promptWords words and responses of about respTokens tokens.
func makeScripts(m *guard.Model, n, promptWords, respTokens int, seed uint64) []*script {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	tok := guardhook.Tokenizer(m)
	pick := func() string { return words[r.IntN(len(words))] }
	out := make([]*script, n)
	for i := range out {
		var p strings.Builder
		fmt.Fprintf(&p, "Question %d:", i)
		for range promptWords {
			p.WriteString(" " + pick())
		}
		p.WriteString("?")
		var resp strings.Builder
		var ids []int
		for len(ids) < respTokens {
			if resp.Len() > 0 && r.IntN(9) == 0 {
				resp.WriteString(".")
			}
			resp.WriteString(" " + pick())
			ids = tok.Encode(resp.String())
		}
		// Whole words only: a response cut inside a word could encode
		// differently as text than as the ids cut at that point.
		pieces := make([]string, len(ids))
		for j, id := range ids {
			pieces[j] = tok.Decode([]int{id}, false)
		}
		out[i] = &script{prompt: p.String(), ids: ids, pieces: pieces}
	}
	return out
}

// solo runs each script alone on the library: the reference.
func solo(ctx context.Context, m *guard.Model, scripts []*script) error {
	for i, s := range scripts {
		st := m.NewStream()
		pv, err := st.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: s.prompt}})
		if err != nil {
			st.Close()
			return fmt.Errorf("script %d: %w", i, err)
		}
		tvs, err := st.AppendIDs(ctx, s.ids)
		st.Close()
		if err != nil {
			return fmt.Errorf("script %d: %w", i, err)
		}
		s.want = pv
		s.tokens = append(s.tokens, tvs...)
	}
	return nil
}
