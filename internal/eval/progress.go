package eval

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws the evaluation's progress: items done, tokens per
// second and the time left. On a terminal the line is redrawn in place;
// elsewhere a line is printed at every 10%. A nil *progress does nothing.
type progress struct {
	w           io.Writer
	tty         bool
	now         func() time.Time
	start       time.Time
	total, done int
	tokens      int
	lastDecile  int
}

func newProgress(w io.Writer, total int) *progress {
	if w == nil {
		return nil
	}
	p := &progress{w: w, now: time.Now, total: total}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.start = p.now()
	return p
}

func (p *progress) add(items, tokens int) {
	if p == nil {
		return
	}
	p.done += items
	p.tokens += tokens
	line := renderEvalProgress(p.done, p.total, p.tokens, p.now().Sub(p.start))
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		return
	}
	if d := p.done * 10 / max(p.total, 1); d > p.lastDecile && p.done < p.total {
		p.lastDecile = d
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) finish() {
	if p == nil {
		return
	}
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintln(p.w, renderEvalProgress(p.done, p.total, p.tokens, p.now().Sub(p.start)))
}

const evalBarWidth = 24

// renderEvalProgress formats one line; the time left assumes the items
// still to come take as long on average as those done.
func renderEvalProgress(done, total, tokens int, elapsed time.Duration) string {
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	fill := int(frac * evalBarWidth)
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d items [%s%s] %3d%%", done, total, strings.Repeat("=", fill), strings.Repeat(" ", evalBarWidth-fill), int(frac*100))
	s := elapsed.Seconds()
	if s > 0 {
		fmt.Fprintf(&b, "  %.1f tokens/s", float64(tokens)/s)
	}
	switch {
	case done >= total:
		fmt.Fprintf(&b, "  in %s", elapsed.Round(100*time.Millisecond))
	case done > 0:
		left := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
		fmt.Fprintf(&b, "  ETA %s", left.Round(time.Second))
	default:
		b.WriteString("  ETA --")
	}
	return b.String()
}
