package tokenizer

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// A tokenizer.json is almost entirely the model's vocab and merges, about
// 300,000 entries that encoding/json decodes slowly through reflection.
// These functions cut the two tables out and parse them with a scanner
// specialised to their shape; encoding/json still checks the rest.

// tables are the model's vocab and merges and where they were in the
// document.
type tables struct {
	vocab      map[string]int
	merges     [][2]string
	vocabSpan  [2]int
	mergesSpan [2]int
}

// splitTables parses the model's vocab and merges, and returns the document
// with both replaced by empty values for encoding/json.
func splitTables(b []byte) ([]byte, *tables, error) {
	tb := &tables{vocabSpan: [2]int{-1, -1}, mergesSpan: [2]int{-1, -1}}
	_, err := forEachMember(b, skipSpace(b, 0), func(key string, vs int) (int, error) {
		if key != "model" {
			return skipValue(b, vs)
		}
		return forEachMember(b, vs, func(key string, vs int) (int, error) {
			var ve int
			var err error
			switch key {
			case "vocab":
				tb.vocab, ve, err = parseVocab(b, vs)
				tb.vocabSpan = [2]int{vs, ve}
			case "merges":
				tb.merges, ve, err = parseMergeTable(b, vs)
				tb.mergesSpan = [2]int{vs, ve}
			default:
				ve, err = skipValue(b, vs)
			}
			return ve, err
		})
	})
	if err != nil {
		return nil, nil, err
	}
	type cut struct {
		span  [2]int
		empty string
	}
	cuts := []cut{{tb.vocabSpan, "{}"}, {tb.mergesSpan, "[]"}}
	if tb.mergesSpan[0] >= 0 && tb.mergesSpan[0] < tb.vocabSpan[0] {
		cuts[0], cuts[1] = cuts[1], cuts[0]
	}
	rest := make([]byte, 0, 4096)
	pos := 0
	for _, c := range cuts {
		if c.span[0] < 0 {
			continue
		}
		rest = append(rest, b[pos:c.span[0]]...)
		rest = append(rest, c.empty...)
		pos = c.span[1]
	}
	rest = append(rest, b[pos:]...)
	return rest, tb, nil
}

func syntaxErr(b []byte, i int, want string) error {
	if i >= len(b) {
		return fmt.Errorf("tokenizer.json: unexpected end of input, want %s", want)
	}
	return fmt.Errorf("tokenizer.json: offset %d: want %s, found %q", i, want, b[i])
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// forEachMember calls f for each member of the object at b[i] with the
// start of its value; f returns the value's end. forEachMember returns the
// object's end.
func forEachMember(b []byte, i int, f func(key string, vs int) (int, error)) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, syntaxErr(b, i, "an object")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		key, e, err := parseString(b, i)
		if err != nil {
			return 0, err
		}
		i = skipSpace(b, e)
		if i >= len(b) || b[i] != ':' {
			return 0, syntaxErr(b, i, "':'")
		}
		ve, err := f(key, skipSpace(b, i+1))
		if err != nil {
			return 0, err
		}
		i = skipSpace(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		return 0, syntaxErr(b, i, "',' or '}'")
	}
}

// stringEnd returns the index after the closing quote of the string at
// b[i] and whether it contains escapes.
func stringEnd(b []byte, i int) (int, bool, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, syntaxErr(b, i, "a string")
	}
	esc := false
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			j++
		case c < 0x20:
			return 0, false, syntaxErr(b, j, "no control character in a string")
		}
	}
	return 0, false, syntaxErr(b, len(b), "'\"'")
}

// parseString decodes the string at b[i]; escapes and invalid UTF-8 go
// through encoding/json so that the result is exactly what it would give.
func parseString(b []byte, i int) (string, int, error) {
	e, esc, err := stringEnd(b, i)
	if err != nil {
		return "", 0, err
	}
	raw := b[i+1 : e-1]
	if !esc && utf8.Valid(raw) {
		return string(raw), e, nil
	}
	var s string
	if err := json.Unmarshal(b[i:e], &s); err != nil {
		return "", 0, fmt.Errorf("tokenizer.json: offset %d: %w", i, err)
	}
	return s, e, nil
}

// skipValue returns the end of the JSON value at b[i]. It checks little:
// encoding/json validates the document around the tables, and the table
// parsers validate the tables.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, syntaxErr(b, i, "a value")
	}
	switch b[i] {
	case '"':
		e, _, err := stringEnd(b, i)
		return e, err
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, _, err := stringEnd(b, i)
				if err != nil {
					return 0, err
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, syntaxErr(b, i, "the end of an object or array")
	}
	s := i // a number or literal
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\r' && b[i] != '\t' {
		i++
	}
	if i == s {
		return 0, syntaxErr(b, i, "a value")
	}
	return i, nil
}

// parseVocab parses {"token": id, ...} at b[i] and returns its end.
func parseVocab(b []byte, i int) (map[string]int, int, error) {
	if i >= len(b) || b[i] != '{' {
		return nil, 0, syntaxErr(b, i, "the vocab object")
	}
	vocab := make(map[string]int, min(len(b)/32, 1<<18))
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return vocab, i + 1, nil
	}
	for {
		tok, e, err := parseString(b, i)
		if err != nil {
			return nil, 0, err
		}
		i = skipSpace(b, e)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, syntaxErr(b, i, "':'")
		}
		i = skipSpace(b, i+1)
		id, n := 0, 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' && n < 10 {
			id = id*10 + int(b[i]-'0')
			i++
			n++
		}
		if n == 0 || (n > 1 && b[i-n] == '0') {
			return nil, 0, syntaxErr(b, i-n, "a non-negative integer id")
		}
		vocab[tok] = id
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return vocab, i + 1, nil
		}
		return nil, 0, syntaxErr(b, i, "',' or '}'")
	}
}

// parseMergeTable parses ["a b", ...] or [["a", "b"], ...] at b[i] and
// returns its end.
func parseMergeTable(b []byte, i int) ([][2]string, int, error) {
	if i >= len(b) || b[i] != '[' {
		return nil, 0, syntaxErr(b, i, "the merges array")
	}
	out := make([][2]string, 0, min(len(b)/64, 1<<18))
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return out, i + 1, nil
	}
	for {
		var pair [2]string
		if i < len(b) && b[i] == '[' {
			var e int
			var err error
			i = skipSpace(b, i+1)
			if pair[0], e, err = parseString(b, i); err != nil {
				return nil, 0, err
			}
			i = skipSpace(b, e)
			if i >= len(b) || b[i] != ',' {
				return nil, 0, syntaxErr(b, i, "',' in a merge pair")
			}
			i = skipSpace(b, i+1)
			if pair[1], e, err = parseString(b, i); err != nil {
				return nil, 0, err
			}
			i = skipSpace(b, e)
			if i >= len(b) || b[i] != ']' {
				return nil, 0, syntaxErr(b, i, "']' after a merge pair")
			}
			i++
		} else {
			s, e, err := parseString(b, i)
			if err != nil {
				return nil, 0, err
			}
			a, c, ok := cutSpace(s)
			if !ok {
				return nil, 0, fmt.Errorf("model: merge %d %q is not two space-separated tokens", len(out), s)
			}
			pair = [2]string{a, c}
			i = e
		}
		out = append(out, pair)
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			return out, i + 1, nil
		}
		return nil, 0, syntaxErr(b, i, "',' or ']'")
	}
}

func cutSpace(s string) (a, b string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			a, b = s[:i], s[i+1:]
			for j := 0; j < len(b); j++ {
				if b[j] == ' ' {
					return "", "", false
				}
			}
			return a, b, a != "" && b != ""
		}
	}
	return "", "", false
}
