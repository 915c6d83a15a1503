package chatmsg

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestToJSON: a JSON value is written as the template's tojson writes
// what it decodes to: escapes the request chose are decoded ("\u0045VIL"
// is the "EVIL" the model reads), keys keep their order, items are
// separated as Python's json.dumps separates them.
func TestToJSON(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"text":"\u0045VIL","b":[1, 2.50,true,null,{}],"a":{}}`, `{"text": "EVIL", "b": [1, 2.50, true, null, {}], "a": {}}`},
		{` "caf\u00e9 <b>&" `, `"café <b>&"`},
		{`"line\nbreak \"q\" \\ \t"`, `"line\nbreak \"q\" \\ \t"`},
		// As Python's json.dumps (ensure_ascii=False) writes them: line and
		// paragraph separators raw (Go's encoder escapes them), other
		// controls escaped.
		{`"a\u2028b\u2029c\u0001\u007f\b\f\r"`, "\"a\u2028b\u2029c\\u0001\u007f\\b\\f\\r\""},
		{`[]`, `[]`},
		{`{"z":1,"a":2}`, `{"z": 1, "a": 2}`},
	} {
		got, err := ToJSON(json.RawMessage(c.in))
		if err != nil || got != c.want {
			t.Errorf("ToJSON(%s) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{``, `{`, `{"a":1}}`, `[1,]`, `{"a" 1}`, `1 2`} {
		if got, err := ToJSON(json.RawMessage(bad)); err == nil {
			t.Errorf("ToJSON(%s) = %s, want an error", bad, got)
		}
	}
}

// FuzzToJSON: whatever ToJSON accepts is valid JSON that decodes to the
// same value as its input.
func FuzzToJSON(f *testing.F) {
	for _, s := range []string{`{"a":"\u0045","b":[1,{"c":null}]}`, `"x"`, `[true,false]`, `1e5`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := ToJSON(json.RawMessage(in))
		if err != nil {
			return
		}
		decode := func(s string) (any, error) {
			d := json.NewDecoder(strings.NewReader(s))
			d.UseNumber()
			var v any
			return v, d.Decode(&v)
		}
		a, err := decode(in)
		if err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", in, err)
		}
		b, err := decode(out)
		if err != nil {
			t.Fatalf("%q written as %q, not JSON: %v", in, out, err)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%q written as %q: %s, want %s", in, out, jb, ja)
		}
	})
}

// TestDeclaredTextDecoded: tool definitions and object arguments are
// judged with their strings decoded, as the template's tojson writes them
// and the model reads them: an instruction spelled in \u escapes is read
// as its letters, not as the escapes.
func TestDeclaredTextDecoded(t *testing.T) {
	defs, err := Definitions([]json.RawMessage{json.RawMessage(`[{"type":"function","function":{"name":"f","description":"\u0045\u0056\u0049\u004c"}}]`)})
	if err != nil || len(defs) != 1 || !strings.Contains(defs[0], `"description": "EVIL"`) {
		t.Errorf("definitions %q, %v", defs, err)
	}
	calls, err := ToolCallsText(json.RawMessage(`[{"function":{"name":"f","arguments":{"q":"\u0045VIL"}}}]`), nil)
	if err != nil || !strings.Contains(calls, `"arguments": {"q": "EVIL"}`) {
		t.Errorf("tool calls %q, %v", calls, err)
	}
}
