package tokenizer

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlclark/regexp2"
)

// The scanner's class table is built when a tokenizer loads; these tests
// call the scanner directly.
func init() { initClasses() }

// splitAll is the scanner over a whole text.
func splitAll(s string) []string {
	var out []string
	for p := 0; p < len(s); {
		e, _ := splitNext(s, p, true)
		out = append(out, s[p:e])
		p = e
	}
	return out
}

// oracle runs the original pattern on a backtracking engine with lookahead.
// regexp2's \s is unicode.IsSpace, the White_Space set tokenizers'
// Oniguruma uses. Its (?i) does not fold U+017F (long s) to s, which
// Oniguruma's does (tokenizers pre-tokenizes "'ſand" as "'ſ", "and": the
// public vectors in testdata/qwen3-tokenizer), so the oracle's pattern
// names it.
var oracle = func() *regexp2.Regexp {
	pattern := strings.Replace(qwen2SplitPattern, "(?i:'s|", "(?i:'[sſ]|", 1)
	if pattern == qwen2SplitPattern {
		panic("the split pattern has no (?i:'s| to extend")
	}
	re := regexp2.MustCompile(pattern, regexp2.None)
	re.MatchTimeout = 10 * time.Second
	return re
}()

func oracleSplit(t testing.TB, s string) []string {
	var out []string
	m, err := oracle.FindStringMatch(s)
	for ; m != nil && err == nil; m, err = oracle.FindNextMatch(m) {
		out = append(out, m.String())
	}
	if err != nil {
		t.Fatalf("regexp2: %v", err)
	}
	return out
}

var splitSeeds = []string{
	"Hello world", "  leading", "trailing  ", "a  b", "x\n\n y", " \r\n\t z",
	"we're they'll I'M it'ſ 'S 're 'R 'Re", "'ſand 0'ſA", "'", "''s", "1234", " 1 ", "a1b2",
	"... !!! ?\n\n", " .x", "\t.", "\u2003\u3000x", "\u00a0word", "\u0085x",
	"你好 世界", "😀 x", "\u0301a", "a\u0301", "x \ny", "  \n", "\r\r\n\n",
}

func TestSplitMatchesOracle(t *testing.T) {
	for _, s := range splitSeeds {
		if got, want := splitAll(s), oracleSplit(t, s); !slices.Equal(got, want) {
			t.Errorf("%+q: got %+q, want %+q", s, got, want)
		}
	}
}

// checkSplitPrefixes verifies the streaming contract: a pre-token the
// scanner calls final on a prefix is the pre-token of the whole text.
func checkSplitPrefixes(t *testing.T, s string, want []string) {
	var ends []int
	e := 0
	for _, w := range want {
		e += len(w)
		ends = append(ends, e)
	}
	for cut := 0; cut <= len(s); cut++ {
		if cut < len(s) && !utf8RuneStart(s[cut]) {
			continue
		}
		pre := s[:cut]
		for p, i := 0, 0; p < len(pre); i++ {
			end, ok := splitNext(pre, p, false)
			if !ok {
				break
			}
			if i >= len(ends) || end != ends[i] {
				t.Fatalf("%+q cut at %d: pre-token %d ends at %d as final, the whole text says %v", s, cut, i, end, ends)
			}
			p = end
		}
	}
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func TestSplitPrefixesAreFinal(t *testing.T) {
	for _, s := range splitSeeds {
		checkSplitPrefixes(t, s, splitAll(s))
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range splitSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Long inputs only slow the search: the oracle backtracks
		// quadratically inside whitespace runs, and the prefix check is
		// quadratic too.
		s = strings.ToValidUTF8(s, "\uFFFD")
		if len(s) > 512 {
			return
		}
		got := splitAll(s)
		if want := oracleSplit(t, s); !slices.Equal(got, want) {
			t.Fatalf("%+q: got %+q, want %+q", s, got, want)
		}
		checkSplitPrefixes(t, s, got)
	})
}
