package chatmsg

import (
	"encoding/json"
	"strings"
	"testing"
)

// twoJoin is Join of two texts as it was first written, the fold the
// joins in loops replaced.
func twoJoin(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

// TestStrayCallEmptyStrings: a call of another shape (no name) has its
// strings joined with newlines, empty ones kept ("a", "", "b" read
// "a\n\nb"), the calls then joined with Join, as before the joins in
// loops were made one join (which, flattening the strings, once dropped
// the empty ones).
func TestStrayCallEmptyStrings(t *testing.T) {
	for _, calls := range [][]string{
		{`{"x":"a","y":"","z":"b"}`},
		{`{"x":"","z":"b"}`},
		{`{"x":"a","z":""}`},
		{`{"x":"","z":""}`},
		{`{"x":"a"}`, `{"x":"","z":"b"}`},
	} {
		raw := json.RawMessage("[" + strings.Join(calls, ",") + "]")
		want := ""
		for _, c := range calls {
			strs, err := stringsOf([]byte(c), "id")
			if err != nil {
				t.Fatal(err)
			}
			for k := range strs {
				strs[k] = Unescape(strs[k])
			}
			want = twoJoin(want, strings.Join(strs, "\n"))
		}
		_, got, err := ToolCalls(raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("stray calls %s: other %q, want %q", raw, got, want)
		}
	}
}
