package jsonkeys

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzCheck: whatever Check passes, encoding/json (which folds case and
// keeps the last of repeated keys) reads the same fields as an exact-key
// reader that keeps the first: the disagreement Check exists to refuse.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"name": "a", "Tagless": 1, "inner": {"bits": 4}, "list": [{"bits": 1}], "promoted": "p"}`,
		`{"NAME": "a"}`, `{"name": "a", "name": "b"}`, `{"inner": {"bits": 1, "BITS": 2}}`,
		`{"list": [{"bits": 1}, {"bits": 2, "bits": 3}]}`, `{"nameſ": 1, "\u212aey": 2}`, `{"any": {"k": [1, {"k": 1}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var o outer
		if Check(b, &o) != nil || json.Unmarshal(b, &o) != nil {
			return
		}
		top, ok := firstWins(t, b)
		if !ok {
			return
		}
		var name string
		var tagless int
		json.Unmarshal(top["name"], &name)
		json.Unmarshal(top["Tagless"], &tagless)
		if o.Name != name || o.Tagless != tagless {
			t.Fatalf("encoding/json read name %q, Tagless %d; the exact keys say %q, %d", o.Name, o.Tagless, name, tagless)
		}
		if inner, ok := firstWins(t, top["inner"]); ok && o.Inner != nil {
			var bits int
			json.Unmarshal(inner["bits"], &bits)
			if o.Inner.Bits != bits {
				t.Fatalf("encoding/json read inner.bits %d; the exact key says %d", o.Inner.Bits, bits)
			}
		}
	})
}

// firstWins reads the members of a JSON object keeping the first of
// repeated keys, as some parsers do.
func firstWins(t *testing.T, b []byte) (map[string]json.RawMessage, bool) {
	var members map[string]json.RawMessage
	if json.Unmarshal(b, &members) != nil || members == nil {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	out := map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[tok.(string)]; !dup {
			out[tok.(string)] = v
		}
	}
	return out, true
}
