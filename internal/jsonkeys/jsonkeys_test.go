package jsonkeys

import (
	"encoding/json"
	"strings"
	"testing"
)

type inner struct {
	Bits int `json:"bits"`
}

type Embedded struct {
	Promoted string `json:"promoted"`
}

type outer struct {
	Embedded
	Name    string            `json:"name"`
	Tagless int               // encoding/json names it "Tagless"
	Skipped int               `json:"-"`
	Inner   *inner            `json:"inner"`
	List    []inner           `json:"list"`
	Labels  map[string]string `json:"labels"`
	Any     any               `json:"any"`
	Raw     json.RawMessage   `json:"raw"`
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"name": "a", "Tagless": 1, "inner": {"bits": 4}, "list": [{"bits": 1}], "labels": {"A": "x", "a": "y"}, "promoted": "p", "unknown": {"Name": 1}}`, ""},
		{`{"NAME": "a"}`, `key "NAME" matches the field "name" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"tagless": 1}`, `key "tagless" matches the field "Tagless" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"Promoted": "p"}`, `key "Promoted" matches the field "promoted" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"inner": {"BITS": 4}}`, `key "BITS" in "inner" matches the field "bits" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"list": [{}, {"Bits": 4}]}`, `key "Bits" in "list[1]" matches the field "bits" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"name": "a", "name": "b"}`, `key "name" appears twice: readers differ on which value counts`},
		{`{"labels": {"a": "x", "a": "y"}}`, `key "a" in "labels" appears twice: readers differ on which value counts`},
		{`{"any": [{"k": 1, "k": 2}]}`, `key "k" in "any[0]" appears twice: readers differ on which value counts`},
		{`{"raw": {"k": 1, "k": 2}}`, `key "k" in "raw" appears twice: readers differ on which value counts`},
		{`{"unknown": {"k": 1, "k": 2}}`, `key "k" in "unknown" appears twice: readers differ on which value counts`},
		{`{"\u001b[2J": 1, "\u001b[2J": 2}`, `key "\x1b[2J" appears twice: readers differ on which value counts`},
		// "-" is skipped by encoding/json; a key "skipped" is unknown.
		{`{"Skipped": 1, "-": 2}`, ""},
		{`{"name": `, "unexpected EOF"},
		{strings.Repeat("[", maxDepth+2), `JSON nested more than 10000 deep`},
		{`{"list": [{"` + strings.Repeat("é", 50) + `": 1, "` + strings.Repeat("é", 50) + `": 1}]}`,
			`key "` + strings.Repeat("é", 40) + `"... in "list[0]" appears twice: readers differ on which value counts`},
	} {
		err := Check([]byte(tc.json), &outer{})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Check(%.60s) = %q, want %q", tc.json, got, tc.want)
		}
	}
}
