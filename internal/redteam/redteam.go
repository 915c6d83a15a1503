// Package redteam holds the injection set every surface is tested with:
// strings that spell control tokens (forged turns, think blocks, end of
// text, partial tags, look-alikes), the conversations each is placed in,
// and the positions the guard must judge. The set and its expected
// positions live in testdata/redteam at the module root.
package redteam

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/text/unicode/norm"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Case is one injection string.
type Case struct {
	ID   string `json:"id"`
	Text string `json:"text"`
	Why  string `json:"why"`
}

// Surfaces are the places a case's text is put: a user turn, a system
// turn, an earlier assistant turn, the judged response, its reasoning.
var Surfaces = []string{"user", "system", "history", "response", "reasoning"}

// Messages is the conversation that carries text at surface. Every one
// ends with a judged response.
func Messages(surface, text string) []tokenizer.Message {
	const sys = "You are a helpful assistant."
	switch surface {
	case "user":
		return []tokenizer.Message{{Role: "system", Content: sys}, {Role: "user", Content: "Question: " + text}, {Role: "assistant", Content: "Sure."}}
	case "system":
		return []tokenizer.Message{{Role: "system", Content: text}, {Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Sure."}}
	case "history":
		return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", Content: text}, {Role: "user", Content: "Thanks."}, {Role: "assistant", Content: "Sure."}}
	case "response":
		return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", Content: text}}
	case "reasoning":
		return []tokenizer.Message{{Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Sure.", ReasoningContent: text}}
	}
	panic("redteam: unknown surface " + surface)
}

// Positions are where the guard reads a conversation: the query heads at
// PromptEnd, the response heads at [JudgedStart, JudgedEnd).
type Positions struct {
	ID          string `json:"id"`
	Surface     string `json:"surface"`
	PromptEnd   int    `json:"prompt_end"`
	JudgedStart int    `json:"judged_start"`
	JudgedEnd   int    `json:"judged_end"`
	Len         int    `json:"len"`
}

// Dir is testdata/redteam at the module root.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "redteam")
}

// Cases reads the injection set.
func Cases() ([]Case, error) { return readJSONL[Case]("injections.jsonl") }

// Expected reads the expected positions, keyed by ID and surface.
func Expected() (map[[2]string]Positions, error) {
	ps, err := readJSONL[Positions]("expected.jsonl")
	if err != nil {
		return nil, err
	}
	m := make(map[[2]string]Positions, len(ps))
	for _, p := range ps {
		m[[2]string{p.ID, p.Surface}] = p
	}
	return m, nil
}

func readJSONL[T any](name string) ([]T, error) {
	f, err := os.Open(filepath.Join(Dir(), name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", name, line, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// Layout renders the conversation of a case at a surface and checks, with
// no reference to the expected file, that its text stayed text: the
// conversation holds exactly the scaffold's added tokens (those of the
// same conversation with harmless text), the ids decode back to every
// byte of the messages, the prompt verdict is read at the scaffold's last
// <|im_end|> before the response, and the judged ids decode to the
// response as the template writes it.
func Layout(tok *tokenizer.Tokenizer, c Case, surface string) (Positions, error) {
	p := Positions{ID: c.ID, Surface: surface}
	conv, err := tok.RenderConversation(Messages(surface, c.Text))
	if err != nil {
		return p, err
	}
	p.PromptEnd, p.JudgedStart, p.JudgedEnd, p.Len = conv.PromptEnd, conv.JudgedStart, conv.JudgedEnd, len(conv.IDs)
	ref, err := tok.RenderConversation(Messages(surface, "x"))
	if err != nil {
		return p, err
	}
	if got, want := added(tok, conv.IDs), added(tok, ref.IDs); !slices.Equal(got, want) {
		return p, fmt.Errorf("added tokens %v, the scaffold writes %v", got, want)
	}
	if conv.IDs[conv.PromptEnd] != tokenizer.ImEnd || slices.Contains(conv.IDs[:conv.PromptEnd], tokenizer.EndOfText) {
		return p, fmt.Errorf("prompt verdict at id %d", conv.IDs[conv.PromptEnd])
	}
	chat, err := tok.RenderChat(Messages(surface, c.Text))
	if err != nil {
		return p, err
	}
	if !slices.Equal(chat.IDs, conv.IDs) && surface != "reasoning" {
		return p, fmt.Errorf("the guard's layout differs from the template's ids")
	}
	// The tokenizer NFC-normalises text, as Hugging Face's does.
	if got := tok.Decode(chat.IDs, false); got != norm.NFC.String(chat.Text) {
		return p, fmt.Errorf("ids decode to %q, the template wrote %q", got, chat.Text)
	}
	m := Messages(surface, c.Text)
	last := m[len(m)-1]
	want := strings.TrimLeft(last.Content, "\n")
	if strings.Trim(last.ReasoningContent, "\n") != "" {
		want = strings.Trim(last.ReasoningContent, "\n") + "\n</think>\n\n" + want
	}
	if got := tok.Decode(conv.Judged(), false); got != norm.NFC.String(want) {
		return p, fmt.Errorf("judged ids decode to %q, want %q", got, want)
	}
	return p, nil
}

// added lists the added tokens in ids, in order.
func added(tok *tokenizer.Tokenizer, ids []int) []int {
	var out []int
	for _, id := range ids {
		if tok.IsAdded(id) {
			out = append(out, id)
		}
	}
	return out
}

// Check compares what a surface judged — the positions of its prompt
// verdicts and of its judged response tokens, in order — with p.
func (p Positions) Check(prompt, judged []int) error {
	if len(prompt) != 1 || prompt[0] != p.PromptEnd {
		return fmt.Errorf("prompt verdicts at %v, want one at %d", prompt, p.PromptEnd)
	}
	if len(judged) != p.JudgedEnd-p.JudgedStart {
		return fmt.Errorf("%d judged tokens, want %d", len(judged), p.JudgedEnd-p.JudgedStart)
	}
	for i, pos := range judged {
		if pos != p.JudgedStart+i {
			return fmt.Errorf("judged token %d at %d, want %d", i, pos, p.JudgedStart+i)
		}
	}
	return nil
}

// Load reads the set and its expected positions, and checks that every
// case has positions at every surface.
func Load() ([]Case, map[[2]string]Positions, error) {
	cases, err := Cases()
	if err != nil {
		return nil, nil, err
	}
	want, err := Expected()
	if err != nil {
		return nil, nil, err
	}
	for _, c := range cases {
		for _, s := range Surfaces {
			if _, ok := want[[2]string{c.ID, s}]; !ok {
				return nil, nil, fmt.Errorf("expected.jsonl has no positions for %s at %s", c.ID, s)
			}
		}
	}
	return cases, want, nil
}
