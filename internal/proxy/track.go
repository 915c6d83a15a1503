package proxy

import "github.com/streamguard/streamguard/guard"

// tracker follows the judged tokens of one response: where each one's
// decoded text ends, the run of non-safe tokens in progress, and the flag.
type tracker struct {
	align   *aligner
	decEnds []int // decoded length through each judged token
	run     int
	runAt   int // first token of the current non-safe run

	flagged   bool
	flag      guard.TokenVerdict
	flagStart int // first token of the run that flagged
}

func newTracker() *tracker { return &tracker{align: newAligner()} }

func (t *tracker) add(tvs []guard.TokenVerdict) {
	for _, tv := range tvs {
		i := len(t.decEnds)
		t.align.addDecoded(tv.Text)
		t.decEnds = append(t.decEnds, len(t.align.dec))
		if tv.NonSafe {
			if t.run == 0 {
				t.runAt = i
			}
			t.run++
		} else {
			t.run = 0
		}
		if tv.Flagged && !t.flagged {
			t.flagged, t.flag, t.flagStart = true, tv, t.runAt
		}
	}
}

func (t *tracker) judged() int { return len(t.decEnds) }

// fedThrough is the fed offset covered by the first n judged tokens.
func (t *tracker) fedThrough(n int) int {
	if n <= 0 {
		return 0
	}
	return t.align.fedOffset(t.decEnds[min(n, len(t.decEnds))-1])
}

// cutFed is where a flagged response is cut: before the run that flagged.
func (t *tracker) cutFed() int { return t.fedThrough(t.flagStart) }
