package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// tokens walks JSON one token at a time instead of using Unmarshal because
// Unmarshal silently keeps the last of duplicate keys, and a duplicated
// tensor name would make two readers of the same file disagree.
//
// Input that json.Valid accepts (every real header) is lexed directly from
// the bytes; json.Decoder's Token is an order of magnitude slower (it
// decodes each value by reflection). Invalid input goes through the
// Decoder instead, whose syntax errors carry a byte offset; the grammar
// walk is shared, so either way the error names the tensor being parsed.
type tokens struct {
	dec *json.Decoder // non-nil when b is not valid JSON
	b   []byte
	i   int
}

// newTokens lexes b; viaDecoder forces the json.Decoder path (the fuzz
// tests compare both paths).
func newTokens(b []byte, viaDecoder bool) *tokens {
	if !viaDecoder && json.Valid(b) {
		return &tokens{b: b}
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return &tokens{dec: d}
}

var errEnd = errors.New("unexpected end of JSON")

// next returns the next token with the same types json.Decoder.Token uses
// (Delim, string, json.Number, bool, nil), consuming commas and colons.
func (t *tokens) next() (json.Token, error) {
	if t.dec != nil {
		tok, err := t.dec.Token()
		if err == io.EOF {
			return nil, errEnd
		}
		if err != nil {
			return nil, fmt.Errorf("invalid JSON at byte %d: %w", t.dec.InputOffset(), err)
		}
		return tok, nil
	}
	t.skipSeparators()
	if t.i >= len(t.b) {
		return nil, errEnd
	}
	switch c := t.b[t.i]; c {
	case '{', '}', '[', ']':
		t.i++
		return json.Delim(c), nil
	case '"':
		return t.lexString()
	case 't':
		t.i = min(t.i+len("true"), len(t.b))
		return true, nil
	case 'f':
		t.i = min(t.i+len("false"), len(t.b))
		return false, nil
	case 'n':
		t.i = min(t.i+len("null"), len(t.b))
		return nil, nil
	}
	j := t.i
	for j < len(t.b) && isNumberByte(t.b[j]) {
		j++
	}
	if j == t.i {
		return nil, fmt.Errorf("invalid JSON at byte %d", t.i) // unreachable for valid JSON
	}
	n := json.Number(t.b[t.i:j])
	t.i = j
	return n, nil
}

// skipSeparators passes whitespace, ',' and ':'. The input is valid JSON,
// so their placement is already known to be right.
func (t *tokens) skipSeparators() {
	for t.i < len(t.b) {
		switch t.b[t.i] {
		case ' ', '\t', '\n', '\r', ',', ':':
			t.i++
		default:
			return
		}
	}
}

func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func (t *tokens) lexString() (json.Token, error) {
	start := t.i
	escaped := false
	j := start + 1
	for ; j < len(t.b); j++ {
		if c := t.b[j]; c == '\\' {
			escaped = true
			j++
		} else if c == '"' {
			break
		}
	}
	if j >= len(t.b) {
		return nil, errEnd // unreachable for valid JSON
	}
	t.i = j + 1
	if !escaped {
		return string(t.b[start+1 : j]), nil
	}
	var s string
	if err := json.Unmarshal(t.b[start:j+1], &s); err != nil {
		return nil, fmt.Errorf("invalid JSON string at byte %d: %w", start, err)
	}
	return s, nil
}

// more reports whether the current array or object has another element.
func (t *tokens) more() bool {
	if t.dec != nil {
		return t.dec.More()
	}
	t.skipSeparators()
	return t.i < len(t.b) && t.b[t.i] != ']' && t.b[t.i] != '}'
}

// delim consumes the delimiter want ('{', '}', '[' or ']').
func (t *tokens) delim(want json.Delim, what string) error {
	tok, err := t.next()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%s: expected %q, found %s", what, string(want), describe(tok))
	}
	return nil
}

// object calls field for each key of the object that comes next; field must
// consume the value. Duplicate keys are an error.
func (t *tokens) object(what string, field func(key string) error) error {
	if err := t.delim('{', what); err != nil {
		return err
	}
	return t.members(what, field)
}

// members is object after its opening brace has been consumed.
func (t *tokens) members(what string, field func(key string) error) error {
	seen := map[string]bool{}
	for t.more() {
		tok, err := t.next()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%s: expected a key, found %s", what, describe(tok))
		}
		if seen[key] {
			return &dupKeyError{key: key}
		}
		seen[key] = true
		if err := field(key); err != nil {
			return err
		}
	}
	return t.delim('}', what)
}

type dupKeyError struct{ key string }

func (e *dupKeyError) Error() string { return fmt.Sprintf("duplicate key %q", e.key) }

// str consumes a string value.
func (t *tokens) str(what string) (string, error) {
	tok, err := t.next()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("%s must be a string, found %s", what, describe(tok))
	}
	return s, nil
}

// uint consumes a non-negative integer value that fits in int64.
func (t *tokens) uint(what string) (int64, error) {
	if t.dec == nil {
		// Fast path for plain digits, the only form a valid entry has.
		t.skipSeparators()
		var v int64
		j := t.i
		for ; j < len(t.b) && '0' <= t.b[j] && t.b[j] <= '9' && v <= (math.MaxInt64-9)/10; j++ {
			v = v*10 + int64(t.b[j]-'0')
		}
		if j > t.i && (j == len(t.b) || !isNumberByte(t.b[j])) {
			t.i = j
			return v, nil
		}
	}
	tok, err := t.next()
	if err != nil {
		return 0, err
	}
	n, ok := tok.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s must be a non-negative integer, found %s", what, describe(tok))
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s must be a non-negative integer below 2^63, found %s", what, n)
	}
	return v, nil
}

// skip consumes one value of any kind.
func (t *tokens) skip() error {
	depth := 0
	for {
		tok, err := t.next()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// end checks that nothing but whitespace follows the top-level value.
func (t *tokens) end() error {
	if t.dec == nil {
		// json.Valid allows only whitespace around the value.
		return nil
	}
	tok, err := t.dec.Token()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trailing bytes after the JSON object at byte %d: %w", t.dec.InputOffset(), err)
	}
	return fmt.Errorf("trailing %s after the JSON object", describe(tok))
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return strconv.Quote(string(v))
	case string:
		return "string " + strconv.Quote(truncate(v, 40))
	case json.Number:
		return "number " + truncate(string(v), 40)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
