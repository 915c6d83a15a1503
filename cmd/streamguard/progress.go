package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// stderrIsTerminal reports whether progress written to w reaches a
// terminal; tests replace it.
var stderrIsTerminal = isTerminal

// isTerminal reports whether w is an *os.File open on a terminal, looking
// through the helpStderr every command's stderr is wrapped in.
func isTerminal(w io.Writer) bool {
	if h, ok := w.(*helpStderr); ok {
		w = h.w
	}
	f, ok := w.(*os.File)
	return ok && fileIsTerminal(f)
}

// progressTo returns where long work draws its progress: stderr when it is
// a terminal and quiet (--quiet, --json) is off, else nil (no progress).
func progressTo(stderr io.Writer, quiet bool) io.Writer {
	if quiet || !stderrIsTerminal(stderr) {
		return nil
	}
	return stderr
}

// progressRedraw is how often a progress line is redrawn.
const progressRedraw = 200 * time.Millisecond

// progressDelay is how long work runs before its bar first appears, so
// quick runs stay quiet; tests set it to 0.
var progressDelay = time.Second

// byteBar draws one line of bytes written out of a total, redrawn in place
// ("\r... \x1b[K") at most every progressRedraw, and erased by finish so the
// result printed next starts on a clean line. A nil *byteBar does nothing.
type byteBar struct {
	w        io.Writer
	label    string
	total    int64
	now      func() time.Time
	start    time.Time
	lastDraw time.Time
	drawn    bool
}

// newByteBar returns a bar on w (nil: none).
func newByteBar(w io.Writer, label string, total int64) *byteBar {
	if w == nil {
		return nil
	}
	b := &byteBar{w: w, label: label, total: total, now: time.Now}
	b.start = b.now()
	return b
}

// set records done bytes.
func (b *byteBar) set(done int64) {
	if b == nil {
		return
	}
	now := b.now()
	if now.Sub(b.start) < progressDelay || now.Sub(b.lastDraw) < progressRedraw {
		return
	}
	b.lastDraw = now
	fmt.Fprintf(b.w, "\r%s\x1b[K", renderByteBar(b.label, done, b.total, now.Sub(b.start)))
	b.drawn = true
}

// finish erases the line if one was drawn.
func (b *byteBar) finish() {
	if b != nil && b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = false
	}
}

// renderByteBar formats one progress line.
func renderByteBar(label string, done, total int64, elapsed time.Duration) string {
	const gib = 1 << 30
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	s := fmt.Sprintf("%s %3.0f%% %.2f/%.2f GiB", label, pct, float64(done)/gib, float64(total)/gib)
	if secs := elapsed.Seconds(); secs > 0 && done > 0 {
		rate := float64(done) / secs
		s += fmt.Sprintf(", %.0f MiB/s", rate/(1<<20))
		if left := time.Duration(float64(total-done) / rate * float64(time.Second)); total > done {
			s += ", " + left.Round(time.Second).String() + " left"
		}
	}
	return s
}

// stageLine draws the current stage of multi-step work ("bench: decode at
// position 4000 (3/7)") in place on w, erased by finish. A nil *stageLine
// does nothing.
type stageLine struct {
	w     io.Writer
	label string
	drawn bool
}

func newStageLine(w io.Writer, label string) *stageLine {
	if w == nil {
		return nil
	}
	return &stageLine{w: w, label: label}
}

// stage shows the stage now running.
func (s *stageLine) stage(name string) {
	if s == nil {
		return
	}
	fmt.Fprintf(s.w, "\r%s: %s\x1b[K", s.label, name)
	s.drawn = true
}

// finish erases the line if one was drawn.
func (s *stageLine) finish() {
	if s != nil && s.drawn {
		fmt.Fprint(s.w, "\r\x1b[K")
		s.drawn = false
	}
}
