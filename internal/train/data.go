package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/streamguard/streamguard/internal/jsonkeys"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// MaxLineBytes bounds one JSON line of a data file.
const MaxLineBytes = 64 << 20

// maxReportedErrors is how many bad lines one read reports before stopping.
const maxReportedErrors = 10

// Label is a risk level and, when the risk is not Safe, a category, both by
// name.
type Label struct {
	Risk     string `json:"risk"`
	Category string `json:"category,omitempty"`
}

// ResponseLabel labels the judged tokens of the final assistant turn, in
// one of two forms:
//
//   - span: Risk and Category with UnsafeStartIndex k (in judged response
//     tokens, default 0): tokens before k are Safe, tokens from k on carry
//     the label. A Safe response has no UnsafeStartIndex.
//   - per token: TokenRisk has one entry per judged token (null leaves that
//     token unlabelled) and TokenCategory, when present, the category of
//     each non-Safe token.
type ResponseLabel struct {
	Risk             string    `json:"risk,omitempty"`
	Category         string    `json:"category,omitempty"`
	UnsafeStartIndex *int      `json:"unsafe_start_index,omitempty"`
	TokenRisk        []*string `json:"token_risk,omitempty"`
	TokenCategory    []*string `json:"token_category,omitempty"`
}

// Example is one line of a data file: a conversation and its labels.
type Example struct {
	// Line is the 1-based line number in the file.
	Line int `json:"-"`
	// ID is copied to predictions unchanged.
	ID       json.RawMessage     `json:"id,omitempty"`
	Messages []tokenizer.Message `json:"messages"`
	// Prompt labels the last user turn, judged at its closing <|im_end|>.
	Prompt *Label `json:"prompt,omitempty"`
	// Response labels the final assistant turn.
	Response *ResponseLabel `json:"response,omitempty"`
	// Meta is free-form and ignored.
	Meta json.RawMessage `json:"meta,omitempty"`
}

// PerToken reports whether the response label uses the per-token form.
func (r *ResponseLabel) PerToken() bool { return r.TokenRisk != nil }

// ParseExample decodes and checks one data line. Unknown fields are errors:
// a misspelt "respnse" would otherwise silently drop its labels.
func ParseExample(line []byte) (*Example, error) {
	// A key repeated, or spelt in another case ("Messages"), would be
	// read differently here (encoding/json takes the last, matches case
	// loosely) and by moderate --jsonl or any other reader of the file.
	if err := jsonkeys.Check(line, &Example{}); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var ex Example
	if err := dec.Decode(&ex); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: more than one value on the line")
	}
	if err := ex.check(); err != nil {
		return nil, err
	}
	return &ex, nil
}

// check validates what can be checked without the tokenizer or the
// taxonomy.
func (ex *Example) check() error {
	n := len(ex.Messages)
	if n == 0 {
		return errors.New(`"messages" is missing or empty`)
	}
	for i, m := range ex.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return fmt.Errorf("message %d: role %q is not supported (system, user, assistant)", i, m.Role)
		}
	}
	last := n - 1
	hasResponse := ex.Messages[last].Role == "assistant"
	if hasResponse {
		last--
	}
	if last < 0 || ex.Messages[last].Role != "user" {
		return errors.New("the conversation must end with a user turn, optionally followed by one assistant turn")
	}
	if strings.TrimSpace(ex.Messages[last].Content) == "" {
		return errors.New("the last user message has no content")
	}
	if ex.Prompt == nil && ex.Response == nil {
		return errors.New(`no label: give "prompt", "response" or both`)
	}
	if p := ex.Prompt; p != nil {
		if err := checkLabel(p.Risk, p.Category); err != nil {
			return fmt.Errorf("prompt: %w", err)
		}
	}
	r := ex.Response
	if r == nil {
		return nil
	}
	if !hasResponse {
		return errors.New(`"response" labels need a final assistant message`)
	}
	if r.PerToken() {
		if r.Risk != "" || r.Category != "" || r.UnsafeStartIndex != nil {
			return errors.New(`response: give either the span form (risk, category, unsafe_start_index) or token_risk, not both`)
		}
		if r.TokenCategory != nil && len(r.TokenCategory) != len(r.TokenRisk) {
			return fmt.Errorf("response: token_category has %d entries but token_risk has %d", len(r.TokenCategory), len(r.TokenRisk))
		}
		labelled := 0
		for i, risk := range r.TokenRisk {
			if risk == nil {
				if r.TokenCategory != nil && r.TokenCategory[i] != nil {
					return fmt.Errorf("response token %d: a category without a risk", i)
				}
				continue
			}
			labelled++
			cat := ""
			if r.TokenCategory != nil && r.TokenCategory[i] != nil {
				cat = *r.TokenCategory[i]
			}
			if err := checkLabel(*risk, cat); err != nil {
				return fmt.Errorf("response token %d: %w", i, err)
			}
		}
		if labelled == 0 {
			return errors.New("response: token_risk labels no token (every entry is null)")
		}
		return nil
	}
	if r.TokenCategory != nil {
		return errors.New("response: token_category needs token_risk")
	}
	if err := checkLabel(r.Risk, r.Category); err != nil {
		return fmt.Errorf("response: %w", err)
	}
	if k := r.UnsafeStartIndex; k != nil {
		if *k < 0 {
			return fmt.Errorf("response: unsafe_start_index %d is negative", *k)
		}
		if r.Risk == "Safe" {
			return errors.New("response: a Safe response has no unsafe_start_index")
		}
	}
	return nil
}

// checkLabel checks a risk/category pair's form; names are checked
// against the taxonomy later. A category on a Safe label is accepted and
// not trained on (category heads learn from non-Safe labels only).
func checkLabel(risk, category string) error {
	if risk == "" {
		return errors.New(`"risk" is missing`)
	}
	if risk != "Safe" && strings.EqualFold(risk, "Safe") {
		return fmt.Errorf("risk %q: the levels are spelt as in the model's label maps (\"Safe\")", risk)
	}
	if risk != "Safe" && category == "" {
		return fmt.Errorf("risk %q needs a category", risk)
	}
	return nil
}

// ReadData reads a data file: one JSON example per line, blank lines
// skipped. Bad lines are reported with their line numbers (the first
// maxReportedErrors of them).
func ReadData(path string) ([]*Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	exs, err := ParseData(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return exs, nil
}

// ParseData reads examples from r; see ReadData.
func ParseData(r io.Reader) ([]*Example, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
	var exs []*Example
	var errs []error
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		ex, err := ParseExample(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
			if len(errs) == maxReportedErrors {
				errs = append(errs, errors.New("stopped after this many bad lines"))
				break
			}
			continue
		}
		ex.Line = line
		exs = append(exs, ex)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %d bytes", line+1, MaxLineBytes)
		}
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(exs) == 0 {
		return nil, errors.New("no examples (the file is empty)")
	}
	return exs, nil
}
