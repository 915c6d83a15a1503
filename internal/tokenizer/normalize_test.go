package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// TestNFCLongNonStarterRuns checks the exact path against NFC computed by
// Python's unicodedata (Unicode 14.0), which, like tokenizers, has no
// 30-mark limit. golang.org/x/text alone inserts U+034F into these.
func TestNFCLongNonStarterRuns(t *testing.T) {
	r := strings.Repeat
	cases := []struct{ in, want string }{
		{"Z" + r("\u0301\u0316", 25) + "A" + r("\u0308", 40) + " z",
			"\u0179" + r("\u0316", 25) + r("\u0301", 24) + "\u00c4" + r("\u0308", 39) + " z"},
		{"x" + r("\u0300", 31) + "\u0323y", "x\u0323" + r("\u0300", 31) + "y"},
		{"e" + r("\u0301", 35) + "\u0323", "\u1eb9" + r("\u0301", 35)},
		{"\u1100" + r("\u0300", 33) + "\u1161", "\u1100" + r("\u0300", 33) + "\u1161"},
		{"a" + r("\u0323", 20) + r("\u0302", 20) + "\u0301", "\u1ead" + r("\u0323", 19) + r("\u0302", 19) + "\u0301"},
		{"A\u030a" + r("\u0316", 40), "\u00c5" + r("\u0316", 40)},
		// A run as long as a request body, classes alternating: ordering it
		// by moving each mark into place took time quadratic in the run.
		{"a" + r("\u0301\u0316", 1<<16) + "b", "\u00e1" + r("\u0316", 1<<16) + r("\u0301", 1<<16-1) + "b"},
	}
	for i, c := range cases {
		if got := nfc(c.in); got != c.want {
			t.Errorf("case %d: nfc = %+q\nwant %+q", i, got, c.want)
		}
		if norm.NFC.String(c.in) == c.want {
			t.Errorf("case %d: golang.org/x/text already gets this right; the case tests nothing", i)
		}
	}
}

func TestNFCMatchesXTextOnOrdinaryText(t *testing.T) {
	for _, s := range []string{"", "plain ascii", "e\u0301 A\u030a \u1100\u1161\u11a8", "\u0958 \uf900", "한글"} {
		if got, want := nfc(s), norm.NFC.String(s); got != want {
			t.Errorf("nfc(%+q) = %+q, want %+q", s, got, want)
		}
	}
}

func TestLastNFCBoundary(t *testing.T) {
	cases := []struct {
		s    string
		want int
	}{
		{"", 0},
		{"ab ", 3},      // a space never interacts: all of it is stable
		{"abc", 2},      // 'c' may still take a combining mark
		{"e\u0301", 0},  // the mark may still be followed by a lower-class mark
		{"xe\u0301", 1}, // ...and 'e' starts the unstable tail
		{"<", 0},        // '<' + U+0338 composes
	}
	for _, c := range cases {
		if got := LastNFCBoundary(c.s); got != c.want {
			t.Errorf("LastNFCBoundary(%+q) = %d, want %d", c.s, got, c.want)
		}
	}
}

// TestNextNFCBoundary: the first segment ends where the next rune starts
// one NFC never joins to it; a run of more than 30 combining marks is one
// segment (golang.org/x/text's NextBoundary cuts it at 30); without the
// rest of the text, a segment that could still grow is undecided (-1).
// Every position it gives splits the text into parts whose NFC forms add
// up to the whole's.
func TestNextNFCBoundary(t *testing.T) {
	zalgo := "Z" + strings.Repeat("\u0301\u0316", 20)
	cases := []struct {
		s     string
		atEOF bool
		want  int
	}{
		{"", true, 0},
		{"", false, -1},
		{"ab", true, 1},
		{"a", false, -1}, // a mark may follow
		{" ", false, 1},  // a space takes none
		{"e\u0301x", true, 3},
		{"e\u0301", false, -1},
		{"\u1100\u1161\u11a8k", true, 9}, // conjoining jamo compose into one syllable
		{zalgo + " x", true, len(zalgo)},
		{zalgo, false, -1},
		{"\xff\xfe", true, 1},   // a byte that is no rune stands alone
		{"\xe2\x82", false, -1}, // a rune not complete yet
	}
	for _, c := range cases {
		if got, _ := NextNFCBoundary([]byte(c.s), 0, c.atEOF); got != c.want {
			t.Errorf("NextNFCBoundary(%+q, %v) = %d, want %d", c.s, c.atEOF, got, c.want)
		}
	}
	for _, s := range []string{zalgo + " and more" + zalgo + zalgo, "e\u0301\u0316 \u1100\u1161\u11a8 <\u0338 \u0f73\u0f81", "plain text"} {
		b := []byte(s)
		for f := 0; f < len(b); {
			end, _ := NextNFCBoundary(b[f:], 0, true)
			if end <= 0 {
				t.Fatalf("NextNFCBoundary(%+q) = %d", b[f:], end)
			}
			if nfc(s[:f])+nfc(s[f:f+end])+nfc(s[f+end:]) != nfc(s) {
				t.Errorf("%+q: cutting at %d and %d changes its NFC form", s, f, f+end)
			}
			f += end
		}
	}
}

// TestMaxIDsBoundsNFC: MaxIDs is NFD's length, which NFC never passes (a
// token spans at least one byte of what NFC gives): the characters NFC
// lengthens most reach it, ASCII and CJK text are charged their length,
// and NFD makes no text more than MaxIDsPerByte times longer.
func TestMaxIDsBoundsNFC(t *testing.T) {
	for _, s := range []string{"\U0001D160", "\uFB2C", "\u0F81", "\u0344", "\uFB2C\U0001D160 plain", "", "plain ascii", "e\u0301"} {
		if n := len(nfc(s)); n > MaxIDs(s) {
			t.Errorf("%q: %d bytes after NFC, more than MaxIDs = %d", s, n, MaxIDs(s))
		}
	}
	if n := len(nfc("\U0001D160")); n != 12 || MaxIDs("\U0001D160") != 12 {
		t.Errorf("U+1D160 is %d bytes after NFC, MaxIDs %d; want 12 both (the bound's worst case)", n, MaxIDs("\U0001D160"))
	}
	for _, s := range []string{"plain ascii", "今天天气很好。"} {
		if n := MaxIDs(s); n != len(s) {
			t.Errorf("MaxIDs(%q) is %d, want its length %d", s, n, len(s))
		}
	}
	if n := MaxIDs("\u0390"); n > MaxIDsPerByte*len("\u0390") || n != 6 {
		t.Errorf("MaxIDs(U+0390) is %d, want 6: NFD's worst ratio, three times its 2 bytes", n)
	}
}

// FuzzNFCBoundaries: the segments NextNFCBoundary walks and the prefix
// LastNFCBoundary keeps normalise separately to the whole's NFC form (the
// proxy's aligner and the stream encoder rely on it), an undecided segment
// (-1) is only ever one that more bytes could extend, and resuming a scan
// as bytes arrive answers as a scan from the start.
func FuzzNFCBoundaries(f *testing.F) {
	for _, s := range []string{"plain", "e\u0301\u0316 x", "Z" + strings.Repeat("\u0301\u0316", 20) + " a", "\u1100\u1161\u11a8k", "<\u0338", "\xff\xfe\xe2\x82", "\u0f73\u0f81"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // the tokenizer repairs bytes first; its NFC sees runes
		}
		b := []byte(s)
		for at := 0; at < len(b); {
			end, _ := NextNFCBoundary(b[at:], 0, true)
			if end <= 0 || at+end > len(b) {
				t.Fatalf("NextNFCBoundary(%+q, true) = %d", b[at:], end)
			}
			if nfc(s[:at])+nfc(s[at:at+end])+nfc(s[at+end:]) != nfc(s) {
				t.Fatalf("%+q: cutting at %d and %d changes its NFC form", s, at, at+end)
			}
			if open, _ := NextNFCBoundary(b[at:at+end], 0, false); open != -1 && open != end {
				t.Fatalf("%+q: segment %+q undecided without its end gives %d", s, b[at:at+end], open)
			}
			// Looked at as it arrives, a byte at a time, resuming where
			// the last call stopped: the same answer at every length.
			rest, scanned := b[at:], 0
			for k := 1; k <= len(rest); k++ {
				var got int
				got, scanned = NextNFCBoundary(rest[:k], scanned, false)
				if want, _ := NextNFCBoundary(rest[:k], 0, false); got != want {
					t.Fatalf("%+q: resumed at %d over %d bytes gives %d, from the start %d", rest, scanned, k, got, want)
				}
				if got != -1 {
					break
				}
			}
			at += end
		}
		if i := LastNFCBoundary(s); nfc(s[:i])+nfc(s[i:]) != nfc(s) {
			t.Fatalf("%+q: cutting at the last boundary %d changes its NFC form", s, i)
		}
	})
}
