package tokenizer

import (
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// cgj is U+034F COMBINING GRAPHEME JOINER, which golang.org/x/text inserts
// into runs of more than 30 non-starters (the Stream-Safe Text Format).
// tokenizers' NFC does not, so such text takes the exact slow path.
const cgj = "\u034f"

// NFC is s as the tokenizer normalizes text before encoding it (Unicode
// NFC, exactly as Hugging Face tokenizers computes it): the form the text
// of the tokens it makes has, for a caller that looks for a passage there.
func NFC(s string) string { return nfc(s) }

// nfc returns the exact Unicode NFC form of s.
func nfc(s string) string {
	if norm.NFC.QuickSpanString(s) == len(s) {
		return s
	}
	out := norm.NFC.String(s)
	if strings.Count(out, cgj) != strings.Count(s, cgj) {
		return nfcExact(s)
	}
	return out
}

// LastNFCBoundary returns the last position i in s where NFC never looks
// across: normalising s[:i] and s[i:]+anything separately gives the same
// result as normalising the whole. That is the end of s if its last rune is
// inert (never composes nor reorders), else the start of the last rune that
// cannot combine with what precedes it; 0 if there is none.
func LastNFCBoundary(s string) int {
	if s == "" {
		return 0
	}
	_, w := utf8.DecodeLastRuneInString(s)
	if norm.NFC.PropertiesString(s[len(s)-w:]).BoundaryAfter() {
		return len(s)
	}
	for i := len(s); i > 0; {
		_, w := utf8.DecodeLastRuneInString(s[:i])
		i -= w
		if i > 0 && norm.NFC.PropertiesString(s[i:]).BoundaryBefore() {
			return i
		}
	}
	return 0
}

// NextNFCBoundary returns the first position i > 0 in b where NFC never
// looks across (the end of b's first segment, as LastNFCBoundary defines
// a boundary), len(b) if b is one segment and atEOF, or -1 if more bytes
// could still extend the segment. Unlike golang.org/x/text's
// NextBoundary, a run of more than 30 non-starters is one segment: the
// tokenizer normalises without the stream-safe limit. from is where to
// look from (0, or the scanned of an earlier call over a prefix of b:
// the segment then had no boundary before it); scanned is how far b was
// looked at, for the next call once b has grown, so that a long segment
// arriving in small pieces is looked at once.
func NextNFCBoundary(b []byte, from int, atEOF bool) (end, scanned int) {
	if len(b) == 0 {
		if atEOF {
			return 0, 0
		}
		return -1, 0
	}
	// size is the size of the rune at b[i:], 0 for one cut off at the end
	// of b (more bytes may complete it), 1 for a byte that is no rune.
	size := func(i int) int {
		if !atEOF && !utf8.FullRune(b[i:]) {
			return 0
		}
		_, n := utf8.DecodeRune(b[i:])
		return n
	}
	n := size(0)
	if n == 0 {
		return -1, 0
	}
	last := norm.NFC.Properties(b[:n])
	if last.Size() != n {
		return n, n // a byte that is no rune: a segment of its own
	}
	i := n
	if from > n {
		_, w := utf8.DecodeLastRune(b[:from])
		i, last = from, norm.NFC.Properties(b[from-w:from])
	}
	for ; i < len(b); i += n {
		if n = size(i); n == 0 {
			return -1, i
		}
		p := norm.NFC.Properties(b[i : i+n])
		if p.Size() != n || p.BoundaryBefore() {
			return i, i
		}
		last = p
	}
	if !atEOF && !last.BoundaryAfter() {
		return -1, len(b)
	}
	return len(b), len(b)
}

// nfcExact is canonical decomposition, canonical ordering and canonical
// composition without the stream-safe limit on non-starter runs. Only text
// with such runs (Zalgo and the like) comes here.
func nfcExact(s string) string {
	var dec []rune
	for _, r := range s {
		// One rune decomposes to a handful, far from the 30 that would make
		// golang.org/x/text insert a joiner.
		for _, d := range norm.NFD.String(string(r)) {
			dec = append(dec, d)
		}
	}
	ccc := make([]uint8, len(dec))
	for i, r := range dec {
		ccc[i] = norm.NFD.PropertiesString(string(r)).CCC()
	}
	// Canonical ordering: stable sort of each run of non-starters by class.
	// A sort, not insertion into place: a run can be as long as the text,
	// and alternating classes made insertion quadratic in it.
	for i := 0; i < len(dec); {
		if ccc[i] == 0 {
			i++
			continue
		}
		j := i
		for j < len(dec) && ccc[j] != 0 {
			j++
		}
		sortRun(dec[i:j], ccc[i:j])
		i = j
	}
	// Canonical composition.
	out := make([]rune, 0, len(dec))
	starter := -1 // index in out of the last starter
	lastCCC := -1 // class of the last character after the starter; -1: none yet
	for i, r := range dec {
		c := int(ccc[i])
		if starter >= 0 && (lastCCC == -1 || (lastCCC < c && lastCCC != 0)) {
			if comp, ok := composePair(out[starter], r); ok {
				out[starter] = comp
				continue
			}
		}
		if c == 0 {
			starter = len(out)
			lastCCC = -1
		} else {
			lastCCC = c
		}
		out = append(out, r)
	}
	return string(out)
}

// sortRun stably sorts a run of non-starters (dec, with their classes ccc)
// by class.
func sortRun(dec []rune, ccc []uint8) {
	if slices.IsSorted(ccc) {
		return
	}
	type mark struct {
		r rune
		c uint8
	}
	run := make([]mark, len(dec))
	for i := range dec {
		run[i] = mark{dec[i], ccc[i]}
	}
	slices.SortStableFunc(run, func(a, b mark) int { return int(a.c) - int(b.c) })
	for i, m := range run {
		dec[i], ccc[i] = m.r, m.c
	}
}

// composePair returns the primary composite of a and b, if there is one.
// The composee a is itself the result of composition, so normalising the
// pair performs exactly this one step.
func composePair(a, b rune) (rune, bool) {
	s := norm.NFC.String(string(a) + string(b))
	r, w := utf8.DecodeRuneInString(s)
	if w == len(s) && r != a {
		return r, true
	}
	return 0, false
}
