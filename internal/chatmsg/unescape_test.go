package chatmsg

import (
	"strings"
	"testing"
)

// TestUnescaper: \uXXXX escapes are decoded however the pieces cut
// them, surrogate pairs included; everything else stays as it came (an
// escaped backslash before "u0045" is not an escape, nor a lone surrogate,
// nor "\u" without four hex digits), and an escape cut short at the end
// is flushed as it came.
func TestUnescaper(t *testing.T) {
	for _, c := range []struct {
		pieces []string
		want   string
	}{
		{[]string{`{"t": "\u0045\u0056\u0049\u004c"}`}, `{"t": "EVIL"}`},
		{[]string{`\u00`, `45V`, `\`, `u0049`, `\u004`, `c`}, `EVIL`},
		{[]string{`\ud83d\ude00 and \uD83D`, `\uDE00`}, "\U0001F600 and \U0001F600"},
		{[]string{`\ud83d`, `\`, `u`, `de00!`}, "\U0001F600!"},
		{[]string{`\\u0045 \" \n \/`}, `\\u0045 \" \n \/`},
		{[]string{`\ud83d x \ude00 \ud83d\u0041`}, `\ud83d x \ude00 \ud83dA`},
		{[]string{`\u12G4 \u`, `zz`}, `\u12G4 \uzz`},
		{[]string{`\u4f60\u597d`}, "你好"},
		{[]string{`end \u00`}, `end \u00`},
		{[]string{`end \ud83d`}, `end \ud83d`},
	} {
		var u Unescaper
		var got strings.Builder
		for _, p := range c.pieces {
			got.WriteString(u.Write(p))
		}
		got.WriteString(u.Flush())
		if got.String() != c.want {
			t.Errorf("%q: %q, want %q", c.pieces, got.String(), c.want)
		}
	}
}

// FuzzUnescaper: cut anywhere into two pieces, text decodes as it does
// whole, and without a backslash it is left as it came.
func FuzzUnescaper(f *testing.F) {
	f.Add(`{"t": "\u0045\ud83d\ude00\\u0041"}`, 7)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		var whole Unescaper
		want := whole.Write(s) + whole.Flush()
		cut = min(max(cut, 0), len(s))
		var u Unescaper
		got := u.Write(s[:cut]) + u.Write(s[cut:]) + u.Flush()
		if got != want {
			t.Fatalf("%q cut at %d: %q, whole %q", s, cut, got, want)
		}
		if !strings.Contains(s, `\`) && got != s {
			t.Fatalf("%q without escapes became %q", s, got)
		}
	})
}
