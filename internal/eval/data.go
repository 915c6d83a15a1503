package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/jsonkeys"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Labels a data set may give.
const (
	Safe          = "Safe"
	Unsafe        = "Unsafe"
	Controversial = "Controversial"
)

// Item is one labelled conversation.
type Item struct {
	// Line is the item's line in its file (from 1).
	Line int
	// ID is the item's "id" field as written (may be empty).
	ID       json.RawMessage
	Messages []tokenizer.Message
	// PromptLabel and ResponseLabel are Safe, Unsafe, Controversial, or
	// "" when the item does not label that part.
	PromptLabel, ResponseLabel       string
	PromptCategory, ResponseCategory string
	// UnsafeStart and UnsafeEnd are the gold unsafe span of the response
	// as token positions in the rendered conversation (inclusive), -1 when
	// not given. UnsafeText is a passage of the response to locate instead.
	UnsafeStart, UnsafeEnd int
	UnsafeText             string
}

// HasResponse reports whether the conversation ends with an assistant turn.
func (it *Item) HasResponse() bool {
	return len(it.Messages) > 0 && it.Messages[len(it.Messages)-1].Role == "assistant"
}

// HasSpan reports whether the item locates its unsafe content.
func (it *Item) HasSpan() bool { return it.UnsafeStart >= 0 || it.UnsafeText != "" }

// maxLine bounds one line of a data set.
const maxLine = 64 << 20

// ReadItems reads a JSON-lines data set; name is used in errors. Every
// problem names the line.
func ReadItems(r io.Reader, name string) ([]Item, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var items []Item
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		it, err := parseItem(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		it.Line = line
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, line+1, maxLine)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%s: no items", name)
	}
	return items, nil
}

// labelLike refuses a key of the item's object that no field takes but
// that is one of the label, category or span fields misspelt
// ("respnse_label", "unsafe_txt": within two edits, one for a short name,
// letter case aside): other keys are a dataset's own columns
// ("prompt_label_source") and are ignored, but a label field ignored would
// leave its task unscored without a word.
func labelLike(b []byte) error {
	var keys map[string]json.RawMessage
	if json.Unmarshal(b, &keys) != nil {
		return nil // the decoder says what is wrong
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if slices.Contains(labelFields, k) {
			continue
		}
		for _, f := range labelFields {
			if len(k) > len(f)+2 || len(f) > len(k)+2 {
				continue // more than two edits apart (and a key may be long)
			}
			if d := editDistance(strings.ToLower(k), f); d <= 1 || d == 2 && len(f) > 8 {
				return fmt.Errorf("unknown field %q: %q misspelt? (a dataset's own columns are ignored, but not one this close to a label field)", k, f)
			}
		}
	}
	return nil
}

// labelFields are the fields that carry labels, categories and spans.
var labelFields = []string{"label", "prompt_label", "response_label", "category", "prompt_category",
	"response_category", "unsafe_start_index", "unsafe_end_index", "unsafe_text"}

// editDistance is the optimal-string-alignment distance between a and b,
// in bytes: Levenshtein's, with a swap of two adjacent letters one edit
// ("catgeory"), the commonest slip. It takes time len(a)·len(b): callers
// compare names of similar lengths.
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// rawItem is an item as written.
type rawItem struct {
	ID               json.RawMessage     `json:"id"`
	Prompt           *string             `json:"prompt"`
	Response         *string             `json:"response"`
	System           *string             `json:"system"`
	Messages         []tokenizer.Message `json:"messages"`
	Message          []tokenizer.Message `json:"message"`
	Label            string              `json:"label"`
	PromptLabel      string              `json:"prompt_label"`
	ResponseLabel    string              `json:"response_label"`
	Category         string              `json:"category"`
	PromptCategory   string              `json:"prompt_category"`
	ResponseCategory string              `json:"response_category"`
	UnsafeStart      *int                `json:"unsafe_start_index"`
	UnsafeEnd        *int                `json:"unsafe_end_index"`
	UnsafeText       string              `json:"unsafe_text"`
}

func parseItem(b []byte) (Item, error) {
	var raw rawItem
	// A key repeated, or spelt in another case ("Prompt"), would be read
	// differently here (encoding/json takes the last, matches case
	// loosely) and by the official evaluation's readers.
	if err := jsonkeys.Check(b, &raw); err != nil {
		return Item{}, fmt.Errorf("invalid JSON: %v", err)
	}
	if err := labelLike(b); err != nil {
		return Item{}, err
	}
	if err := messageKeys(b); err != nil {
		return Item{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return Item{}, fmt.Errorf("invalid JSON: %v", err)
	}
	if dec.More() {
		return Item{}, errors.New("more than one JSON value on the line")
	}
	it := Item{ID: raw.ID, UnsafeStart: -1, UnsafeEnd: -1, UnsafeText: raw.UnsafeText}
	msgs, err := raw.conversation()
	if err != nil {
		return Item{}, err
	}
	it.Messages = msgs
	if err := raw.labels(&it); err != nil {
		return Item{}, err
	}
	if err := raw.span(&it); err != nil {
		return Item{}, err
	}
	return it, nil
}

// conversation builds the messages from either form and checks their
// shape: a user turn last, or a user turn then one assistant turn.
func (r *rawItem) conversation() ([]tokenizer.Message, error) {
	short := r.Prompt != nil || r.Response != nil || r.System != nil
	if r.Messages != nil && r.Message != nil {
		return nil, errors.New(`give "messages" or "message", not both`)
	}
	msgs := r.Messages
	if msgs == nil {
		msgs = r.Message
	}
	switch {
	case short && msgs != nil:
		return nil, errors.New(`give either "prompt"/"response"/"system" or "messages", not both`)
	case short:
		if r.Prompt == nil {
			return nil, errors.New(`"response" or "system" without "prompt"`)
		}
		if r.System != nil {
			msgs = append(msgs, tokenizer.Message{Role: "system", Content: *r.System})
		}
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: *r.Prompt})
		if r.Response != nil {
			msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: *r.Response})
		}
	case len(msgs) == 0:
		return nil, errors.New(`no conversation: want "prompt" or "messages"`)
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return nil, fmt.Errorf("message %d: unknown role %q (want system, user or assistant)", i, m.Role)
		}
	}
	last := len(msgs) - 1
	if msgs[last].Role == "assistant" {
		last--
	}
	if last < 0 || msgs[last].Role != "user" {
		return nil, errors.New("the conversation must end with a user turn, optionally followed by one assistant turn")
	}
	if strings.TrimSpace(msgs[last].Content) == "" {
		return nil, errors.New("the last user turn is empty")
	}
	return msgs, nil
}

// normLabel accepts a label in any letter case.
func normLabel(field, s string) (string, error) {
	for _, l := range []string{Safe, Unsafe, Controversial} {
		if strings.EqualFold(s, l) {
			return l, nil
		}
	}
	return "", fmt.Errorf("%s %q: want Safe, Unsafe or Controversial", field, s)
}

func (r *rawItem) labels(it *Item) error {
	pl, rl, pc, rc := r.PromptLabel, r.ResponseLabel, r.PromptCategory, r.ResponseCategory
	if r.Label != "" || r.Category != "" {
		target := "prompt"
		if it.HasResponse() {
			target = "response"
		}
		if r.Label == "" {
			return errors.New(`"category" without "label"`)
		}
		if target == "response" {
			if rl != "" || rc != "" {
				return errors.New(`"label" is the response label here: do not also give "response_label"/"response_category"`)
			}
			rl, rc = r.Label, r.Category
		} else {
			if pl != "" || pc != "" {
				return errors.New(`"label" is the prompt label here: do not also give "prompt_label"/"prompt_category"`)
			}
			pl, pc = r.Label, r.Category
		}
	}
	var err error
	if pl != "" {
		if it.PromptLabel, err = normLabel("prompt label", pl); err != nil {
			return err
		}
	}
	if rl != "" {
		if !it.HasResponse() {
			return errors.New("a response label, but the conversation does not end with an assistant turn")
		}
		if it.ResponseLabel, err = normLabel("response label", rl); err != nil {
			return err
		}
	}
	if it.PromptLabel == "" && it.ResponseLabel == "" {
		return errors.New(`no label: want "prompt_label", "response_label" or "label"`)
	}
	if pc != "" && (it.PromptLabel == "" || it.PromptLabel == Safe) {
		return errors.New("a prompt category needs an Unsafe or Controversial prompt label")
	}
	if rc != "" && (it.ResponseLabel == "" || it.ResponseLabel == Safe) {
		return errors.New("a response category needs an Unsafe or Controversial response label")
	}
	it.PromptCategory, it.ResponseCategory = pc, rc
	return nil
}

func (r *rawItem) span(it *Item) error {
	hasIdx := r.UnsafeStart != nil || r.UnsafeEnd != nil
	if !hasIdx && r.UnsafeText == "" {
		return nil
	}
	if it.ResponseLabel == "" || it.ResponseLabel == Safe {
		return errors.New("an unsafe span needs an Unsafe or Controversial response label")
	}
	if hasIdx && r.UnsafeText != "" {
		return errors.New(`give "unsafe_start_index"/"unsafe_end_index" or "unsafe_text", not both`)
	}
	if hasIdx {
		if r.UnsafeStart == nil || r.UnsafeEnd == nil {
			return errors.New(`"unsafe_start_index" and "unsafe_end_index" go together`)
		}
		if *r.UnsafeStart < 0 || *r.UnsafeEnd < *r.UnsafeStart {
			return fmt.Errorf("unsafe span [%d, %d] is not a range of token positions", *r.UnsafeStart, *r.UnsafeEnd)
		}
		it.UnsafeStart, it.UnsafeEnd = *r.UnsafeStart, *r.UnsafeEnd
		return nil
	}
	// As the tokenizer reads both (NFC): a passage written in another
	// normal form than the response is found, as it is among the tokens.
	resp := it.Messages[len(it.Messages)-1].Content
	if !strings.Contains(tokenizer.NFC(resp), tokenizer.NFC(r.UnsafeText)) {
		return errors.New(`"unsafe_text" is not a passage of the response`)
	}
	return nil
}

// CheckCategories refuses gold categories the model cannot predict.
func CheckCategories(items []Item, name string, queryCategories, responseCategories []string) error {
	has := func(list []string, c string) bool {
		for _, x := range list {
			if x == c {
				return true
			}
		}
		return false
	}
	for _, it := range items {
		if it.PromptCategory != "" && !has(queryCategories, it.PromptCategory) {
			return fmt.Errorf("%s:%d: prompt category %q is not in the model's query categories %q", name, it.Line, it.PromptCategory, queryCategories)
		}
		if it.ResponseCategory != "" && !has(responseCategories, it.ResponseCategory) {
			return fmt.Errorf("%s:%d: response category %q is not in the model's response categories %q", name, it.Line, it.ResponseCategory, responseCategories)
		}
	}
	return nil
}

// messageKeys refuses a message member eval does not read (tool_calls,
// name, ...): an answer made of tool calls would be evaluated as the empty
// answer, its calls judged nowhere.
func messageKeys(b []byte) error {
	var r struct {
		Messages []map[string]json.RawMessage `json:"messages"`
		Message  []map[string]json.RawMessage `json:"message"`
	}
	if json.Unmarshal(b, &r) != nil {
		return nil // the decoding below reports it
	}
	for i, m := range append(r.Messages, r.Message...) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if k != "role" && k != "content" && k != "reasoning_content" {
				return fmt.Errorf("message %d: member %q: eval reads role, content and reasoning_content", i, k)
			}
		}
	}
	return nil
}
