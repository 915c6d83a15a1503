package tokenizer

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

// FuzzTables checks the specialised vocab and merges parsers against
// encoding/json: whatever they accept, encoding/json reads the same way.
func FuzzTables(f *testing.F) {
	for _, s := range []string{
		`{"a": 0, "b":1 ,"\u0120x": 2, "\ud83d\ude00": 3}`, `{}`, `{"a": 01}`, `{"a": -1}`, `{"a":1,}`,
		`["a b", "\u0120 t"]`, `[["a", "b"], ["c","d"]]`, `[]`, `["ab"]`, `[["a"]]`, "{\"\xff\": 1}", `{"a\"b": 7}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, end, err := parseVocab(b, 0); err == nil {
			var want map[string]int
			if err := json.Unmarshal(b[:end], &want); err != nil {
				t.Fatalf("parseVocab accepted %q, encoding/json: %v", b[:end], err)
			}
			if !maps.Equal(v, want) {
				t.Fatalf("parseVocab(%q) = %v, encoding/json %v", b[:end], v, want)
			}
		}
		if m, end, err := parseMergeTable(b, 0); err == nil {
			var pairs [][]string
			var strs []string
			var want [][2]string
			if json.Unmarshal(b[:end], &pairs) == nil {
				for _, p := range pairs {
					if len(p) != 2 {
						t.Fatalf("parseMergeTable accepted %q with a pair of %d", b[:end], len(p))
					}
					want = append(want, [2]string{p[0], p[1]})
				}
			} else if err := json.Unmarshal(b[:end], &strs); err == nil {
				for _, s := range strs {
					a, c, ok := cutSpace(s)
					if !ok {
						t.Fatalf("parseMergeTable accepted merge %q", s)
					}
					want = append(want, [2]string{a, c})
				}
			} else {
				t.Fatalf("parseMergeTable accepted %q, encoding/json: %v", b[:end], err)
			}
			if !slices.Equal(m, want) && !(len(m) == 0 && len(want) == 0) {
				t.Fatalf("parseMergeTable(%q) = %q, encoding/json %q", b[:end], m, want)
			}
		}
		// The whole loader must fail cleanly, never panic.
		FromJSON(b)
	})
}

// FuzzFromJSON mutates a small valid tokenizer.json: the loader must return
// a tokenizer or an error, never panic, and a loaded one must encode.
func FuzzFromJSON(f *testing.F) {
	f.Add(tinyJSON(f, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := FromJSON(b)
		if err != nil {
			return
		}
		ids := tok.Encode("abc <|end|> x\u0301")
		tok.Decode(ids, true)
	})
}
