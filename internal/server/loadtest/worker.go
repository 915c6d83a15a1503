package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// worker runs conversations one after another until the deadline (or
// until the server is gone after SIGTERM).
type worker struct {
	ps      *phaseState
	id      int
	scripts []*script
	win     *window
	// hasOpened is set after the worker's first prompt was judged.
	hasOpened bool
	duplex    bool // POST /v1/streams/connect instead of REST sessions
	text      bool // feed text pieces instead of ids
	// untilGone keeps the worker going past the deadline until the server
	// is gone (the SIGTERM check needs load when the signal arrives).
	untilGone bool
	// abandon stops at the deadline in the middle of a conversation
	// (checking what was received): without batching, finishing every
	// conversation would take long after the phase.
	abandon bool

	lat        []float64 // append round trips, seconds
	openLat    []float64 // opening a conversation (its prompt judged, 429 retries included), seconds
	convs      int64     // completed
	checked    int64     // compared with the solo run, completed or cut
	tokens     int64     // judged tokens received within the window
	errs       []string
	mismatches []string
}

func (w *worker) run(ctx context.Context, streams int) {
	for n := 0; ; n++ {
		if !w.untilGone && w.win.over(time.Now()) {
			return
		}
		sc := w.scripts[(w.id+n*streams)%len(w.scripts)]
		if !w.conversation(ctx, sc) {
			return
		}
	}
}

// conversation runs one script and checks its verdicts; false stops the
// worker (the server is gone).
func (w *worker) conversation(ctx context.Context, sc *script) bool {
	var st stream = &restStream{ps: w.ps}
	if w.duplex {
		st = &duplexStream{ps: w.ps}
	}
	fail := func(what string, err error) bool {
		if errors.Is(err, errServerGone) {
			return false
		}
		w.errs = append(w.errs, fmt.Sprintf("worker %d %s: %v", w.id, what, err))
		if d, ok := st.(*duplexStream); ok {
			d.shut()
		}
		return !w.ps.sigterm.Load()
	}
	opening := time.Now()
	pv, err := st.open(ctx, sc.prompt)
	if err != nil {
		return fail("open", err)
	}
	if now := time.Now(); w.win.in(now) {
		w.openLat = append(w.openLat, now.Sub(opening).Seconds())
	}
	if !w.hasOpened {
		w.hasOpened = true
		w.win.opened()
	}
	if !samePrompt(pv, sc.want) {
		w.mismatches = append(w.mismatches, fmt.Sprintf("worker %d: prompt verdict %+v, solo %+v", w.id, pv, sc.want))
	}
	var got []guard.TokenVerdict
	for i, id := range sc.ids {
		var text *string
		if w.text {
			text = &sc.pieces[i]
		}
		if w.abandon && w.win.over(time.Now()) {
			w.check(sc, got, false)
			st.close(ctx)
			return false
		}
		t0 := time.Now()
		tvs, err := st.append(ctx, []int{id}, text)
		if err != nil {
			w.check(sc, got, false)
			return fail("append", err)
		}
		if now := time.Now(); w.win.in(now) {
			w.lat = append(w.lat, now.Sub(t0).Seconds())
			w.tokens += int64(len(tvs))
		}
		got = append(got, tvs...)
	}
	tvs, err := st.flush(ctx)
	if err != nil {
		w.check(sc, got, false)
		return fail("flush", err)
	}
	if w.win.in(time.Now()) {
		w.tokens += int64(len(tvs))
	}
	got = append(got, tvs...)
	w.check(sc, got, true)
	if err := st.close(ctx); err != nil {
		return fail("close", err)
	}
	w.convs++
	return true
}

// check compares the verdicts received with the solo run: all of them, or
// the prefix received before the conversation was cut.
func (w *worker) check(sc *script, got []guard.TokenVerdict, complete bool) {
	w.checked++
	if len(got) > len(sc.tokens) || (complete && len(got) != len(sc.tokens)) {
		w.mismatches = append(w.mismatches, fmt.Sprintf("worker %d: %d verdicts, solo %d", w.id, len(got), len(sc.tokens)))
		return
	}
	for i := range got {
		if !sameToken(&got[i], &sc.tokens[i]) {
			w.mismatches = append(w.mismatches, fmt.Sprintf("worker %d token %d: %+v, solo %+v", w.id, i, got[i], sc.tokens[i]))
			return
		}
	}
}

func sameToken(g, w *guard.TokenVerdict) bool {
	return g.ID == w.ID && g.Index == w.Index && g.Position == w.Position && g.Risk == w.Risk && g.Category == w.Category &&
		g.NonSafe == w.NonSafe && g.Flagged == w.Flagged && bitsEqual(g.RiskProbs, w.RiskProbs) && bitsEqual(g.CategoryProbs, w.CategoryProbs)
}

func samePrompt(g, w *guard.PromptVerdict) bool {
	return g != nil && g.Risk == w.Risk && g.Category == w.Category && g.Position == w.Position && g.Flagged == w.Flagged &&
		bitsEqual(g.RiskProbs, w.RiskProbs) && bitsEqual(g.CategoryProbs, w.CategoryProbs)
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// window is the measured part of a phase: it opens once every worker has
// had its first prompt judged (the ramp-up of prompt prefills is left out)
// and lasts the phase's duration.
type window struct {
	streams    int64
	d          time.Duration
	first      sync.Once
	seen       atomic.Int64
	start, end atomic.Int64 // unix nanoseconds; 0 until the window opens
	openedCh   chan struct{}
}

func newWindow(streams int, d time.Duration) *window {
	return &window{streams: int64(streams), d: d, openedCh: make(chan struct{})}
}

// opened counts a worker's first prompt; the last one opens the window.
func (w *window) opened() {
	if w.seen.Add(1) == w.streams {
		w.open(time.Now())
	}
}

// open starts the window at t (also called when the ramp-up takes too long).
func (w *window) open(t time.Time) {
	w.first.Do(func() {
		w.start.Store(t.UnixNano())
		w.end.Store(t.Add(w.d).UnixNano())
		close(w.openedCh)
	})
}

func (w *window) in(t time.Time) bool {
	s := w.start.Load()
	return s != 0 && t.UnixNano() >= s && t.UnixNano() < w.end.Load()
}

func (w *window) over(t time.Time) bool {
	e := w.end.Load()
	return e != 0 && t.UnixNano() >= e
}
