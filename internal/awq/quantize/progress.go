package quantize

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws a bar with an ETA. On a terminal it redraws one line a
// few times a second; elsewhere (a log file, a test buffer) it prints a
// line only when a unit of work completes, so logs stay short.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	start time.Time
	total float64 // units of work (layers)
	done  float64
	label string
	last  time.Time
	now   func() time.Time
}

func newProgress(w io.Writer, total float64) *progress {
	if w == nil {
		w = io.Discard
	}
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, start: time.Now(), total: total, now: time.Now}
}

// set reports the completed units and what is being done now; a whole
// number of units completed prints a line on a non-terminal.
func (p *progress) set(done float64, label string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	crossed := int(done) > int(p.done)
	p.done, p.label = done, label
	now := p.now()
	if p.tty && now.Sub(p.last) < 250*time.Millisecond && !crossed {
		return
	}
	if !p.tty && !crossed {
		return
	}
	p.last = now
	p.draw(now)
}

func (p *progress) draw(now time.Time) {
	const width = 24
	frac := 0.0
	if p.total > 0 {
		frac = min(1, p.done/p.total)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	elapsed := now.Sub(p.start)
	eta := "?"
	if frac > 0 {
		eta = fmtDur(time.Duration(float64(elapsed) * (1 - frac) / frac))
	}
	line := fmt.Sprintf("[%s] %3.0f%% %s  elapsed %s  ETA %s", bar, 100*frac, p.label, fmtDur(elapsed), eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// finish ends the bar's line on a terminal.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		p.draw(p.now())
		fmt.Fprintln(p.w)
	}
}

// logf prints a message on its own line.
func (p *progress) logf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", a...)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
