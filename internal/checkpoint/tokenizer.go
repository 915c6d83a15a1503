package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// ScaffoldToken is a token the guard writes into a stream itself (the chat
// template's scaffold), with the id the model was trained on (the Qwen3
// tokenizer's id).
type ScaffoldToken struct {
	Text string `json:"text"`
	ID   int    `json:"id"`
	// Special tokens are looked up by name (Tokenizer.TokenID): the
	// scaffold writes them as ids, and text never encodes to them. The
	// others are checked as plain text (Tokenizer.EncodeText).
	Special bool `json:"special"`
}

// ScaffoldTokens are the chat-scaffold tokens a tokenizer must map to
// these ids for the guard to drive the model.
var ScaffoldTokens = []ScaffoldToken{
	{"<|im_start|>", tokenizer.ImStart, true}, {"<|im_end|>", tokenizer.ImEnd, true},
	{"<think>", tokenizer.Think, true}, {"</think>", tokenizer.ThinkEnd, true},
	{"<tool_call>", tokenizer.ToolCallStart, true}, {"</tool_call>", tokenizer.ToolCallEnd, true},
	{"<tool_response>", tokenizer.ToolResponseStart, true}, {"</tool_response>", tokenizer.ToolResponseEnd, true},
	{"user", 872, false}, {"assistant", 77091, false}, {"\n", 198, false}, {"\n\n", 271, false},
}

// MaxTokenizerBytes bounds the tokenizer.json that CheckTokenizerFile
// reads; the Qwen3 one is about 11 MiB. It is tokenizer.Load's own bound
// (which also caps what a .gz decompresses to), so the two cannot differ.
const MaxTokenizerBytes = tokenizer.MaxFileBytes

// ScaffoldCheck is how a tokenizer maps one scaffold token.
type ScaffoldCheck struct {
	ScaffoldToken
	Got []int `json:"got"` // the id found (special), or the plain-text encoding
	OK  bool  `json:"ok"`
}

// CheckScaffold maps every scaffold token with tok.
func CheckScaffold(tok *tokenizer.Tokenizer) []ScaffoldCheck {
	out := make([]ScaffoldCheck, len(ScaffoldTokens))
	for i, s := range ScaffoldTokens {
		c := ScaffoldCheck{ScaffoldToken: s, Got: []int{}}
		if s.Special {
			if id, ok := tok.TokenID(s.Text); ok {
				c.Got = []int{id}
			}
		} else {
			c.Got = tok.EncodeText(s.Text)
		}
		c.OK = slices.Equal(c.Got, []int{s.ID})
		out[i] = c
	}
	return out
}

// TokenizerProblems lists what keeps tok from driving a model whose
// vocab_size is vocab: ids the embedding cannot look up, or a chat scaffold
// that maps to other ids than the model was trained on. vocab ≤ 0 skips
// the vocabulary check.
func TokenizerProblems(tok *tokenizer.Tokenizer, vocab int) []string {
	return tokenizerProblems(tok.VocabSize(), vocab, CheckScaffold(tok))
}

func tokenizerProblems(n, vocab int, scaffold []ScaffoldCheck) []string {
	var p []string
	if vocab > 0 && n > vocab {
		p = append(p, fmt.Sprintf("tokenizer has %d tokens but the model's vocab_size is %d: not the tokenizer of this model", n, vocab))
	}
	for _, c := range scaffold {
		switch {
		case c.OK:
		case c.Special && len(c.Got) == 0:
			p = append(p, fmt.Sprintf("tokenizer has no token %q (want id %d): not a Qwen3 tokenizer", c.Text, c.ID))
		case c.Special:
			p = append(p, fmt.Sprintf("tokenizer maps %q to id %d, want %d: not a Qwen3 tokenizer", c.Text, c.Got[0], c.ID))
		default:
			p = append(p, fmt.Sprintf("tokenizer encodes %q as %v, want [%d]: not a Qwen3 tokenizer", c.Text, c.Got, c.ID))
		}
	}
	return p
}

// CheckTokenizer is TokenizerProblems as an error, nil when tok can drive
// a model with vocab_size vocab. It is the one check of a tokenizer against
// a model, for verify and for loading alike.
func CheckTokenizer(tok *tokenizer.Tokenizer, vocab int) error {
	if p := TokenizerProblems(tok, vocab); len(p) > 0 {
		return errors.New(strings.Join(p, "; "))
	}
	return nil
}

// TokenizerReport is the verdict on a model folder's tokenizer.json.
type TokenizerReport struct {
	File string `json:"file"`
	// Checked is false when the file could not be read or parsed (the
	// report's problems say why).
	Checked bool `json:"checked"`
	// VocabSize is the tokenizer's (one more than its largest id);
	// ModelVocabSize the config's vocab_size, 0 when unknown.
	VocabSize      int             `json:"vocab_size,omitempty"`
	ModelVocabSize int             `json:"model_vocab_size,omitempty"`
	Scaffold       []ScaffoldCheck `json:"scaffold,omitempty"`
	OK             bool            `json:"ok"`
}

// CheckTokenizerFile loads the folder's tokenizer.json and checks it
// against the config with TokenizerProblems, recording the result in
// r.Tokenizer and any problem in r.Problems. Report does not do this
// itself: parsing a tokenizer takes a noticeable fraction of a second.
func (r *LoadReport) CheckTokenizerFile() {
	name := "tokenizer.json"
	path := filepath.Join(r.Dir, name)
	tr := &TokenizerReport{File: name}
	r.Tokenizer = tr
	if r.Config != nil && r.Config.VocabSize > 0 {
		tr.ModelVocabSize = r.Config.VocabSize
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return // Report has stated the problem
	}
	if fi.Size() > MaxTokenizerBytes {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: %d bytes, more than the %d allowed", name, fi.Size(), MaxTokenizerBytes))
		return
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("%s cannot be loaded: %s", name, printable(err.Error())))
		return
	}
	tr.Checked = true
	tr.VocabSize = tok.VocabSize()
	tr.Scaffold = CheckScaffold(tok)
	probs := tokenizerProblems(tr.VocabSize, tr.ModelVocabSize, tr.Scaffold)
	tr.OK = len(probs) == 0
	for _, p := range probs {
		r.Problems = append(r.Problems, name+": "+p)
	}
}
