package proxy

import (
	"bytes"
	"sort"
	"unicode/utf8"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// alignRun is a stretch where the decoded text of the judged tokens equals
// the fed text byte for byte: dec[dec:dec+n] == fed[fed:fed+n].
type alignRun struct{ dec, fed, n int }

// aligner maps offsets in the decoded text of judged tokens to offsets in
// the fed text. The tokenizer normalises to NFC (exactly: a run of more
// than 30 combining marks is one segment, so the boundaries are the
// tokenizer's own, not golang.org/x/text's stream-safe ones), so the two
// are equal except where the fed text is not in NFC: there the aligner
// backs off to the NFC boundary before the difference and re-synchronises
// one NFC segment later, checking that the segment's NFC form is exactly
// what was decoded. Offsets inside such a segment map to its start, so the mapping
// never claims fed bytes the tokens did not cover. If a segment does not
// check out (a normaliser disagreement), the mapping stops growing and the
// rest is released only when the whole text was judged.
type aligner struct {
	dec   []byte
	runs  []alignRun
	open  bool // the last run may still grow
	stuck bool
	// scanned is how much of the segment after a closed run was looked
	// at without finding its end (NextNFCBoundary's resume point).
	scanned int
}

func newAligner() *aligner {
	return &aligner{runs: []alignRun{{}}, open: true}
}

func (a *aligner) addDecoded(s string) { a.dec = append(a.dec, s...) }

// sync extends the mapping over what fed and the decoded text hold now;
// atEOF says fed is complete.
func (a *aligner) sync(fed []byte, atEOF bool) {
	for !a.stuck {
		r := &a.runs[len(a.runs)-1]
		d, f := r.dec+r.n, r.fed+r.n
		if a.open {
			for d < len(a.dec) && f < len(fed) && a.dec[d] == fed[f] {
				d, f = d+1, f+1
			}
			r.n = d - r.dec
			if d == len(a.dec) || f == len(fed) {
				return
			}
			// The texts differ: the NFC segment holding the difference
			// starts at the last boundary of the run at the latest, and
			// at the start of the character the bytes began to differ in
			// (U+2000 is U+2002 in NFC: two bytes of three agree).
			n := r.n
			for n > 0 && !utf8.RuneStart(fed[r.fed+n]) {
				n--
			}
			r.n = tokenizer.LastNFCBoundary(string(fed[r.fed : r.fed+n]))
			a.open, a.scanned = false, 0
			continue
		}
		end, scanned := tokenizer.NextNFCBoundary(fed[f:], a.scanned, atEOF)
		if end <= 0 {
			a.scanned = scanned
			return
		}
		want := []byte(tokenizer.NFC(string(fed[f : f+end])))
		if have := a.dec[d:]; len(have) < len(want) {
			if !bytes.HasPrefix(want, have) {
				a.stuck = true
			}
			return
		}
		if !bytes.Equal(a.dec[d:d+len(want)], want) {
			a.stuck = true
			return
		}
		a.runs = append(a.runs, alignRun{dec: d + len(want), fed: f + end})
		a.open = true
	}
}

// fedOffset maps decoded offset d to the largest fed offset whose text is
// covered by the decoded text up to d.
func (a *aligner) fedOffset(d int) int {
	i := sort.Search(len(a.runs), func(i int) bool { return a.runs[i].dec > d }) - 1
	if i < 0 {
		return 0
	}
	r := a.runs[i]
	return r.fed + min(d-r.dec, r.n)
}
