package hub

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress draws one progress bar for a whole pull: bytes on disk out of
// the total, the transfer speed, the time left and the files done. On a
// terminal the line is redrawn in place a few times a second; elsewhere
// (a log, a pipe) a line is printed at every 10%. A nil *Progress is a
// valid no-op.
type Progress struct {
	mu          sync.Mutex
	w           io.Writer
	tty         bool
	now         func() time.Time
	start       time.Time
	total       int64
	files       int
	filesDone   int
	onDisk      map[*fileProgress]int64
	done        int64 // sum of onDisk
	transferred int64 // bytes that came over the network
	lastDraw    time.Time
	lastDecile  int64
	drawn       bool
}

// redrawEvery is how often a terminal line is redrawn.
const redrawEvery = 200 * time.Millisecond

// NewProgress draws to w (nil: no bar) for files totalling total bytes
// (-1 when unknown).
func NewProgress(w io.Writer, total int64, files int) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{w: w, now: time.Now, total: total, files: files, onDisk: map[*fileProgress]int64{}}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.start = p.now()
	return p
}

// fileProgress is one file's share of the bar.
type fileProgress struct{ p *Progress }

func (p *Progress) file() *fileProgress { return &fileProgress{p: p} }

// set records that the file now has n bytes on disk.
func (f *fileProgress) set(n int64) {
	if f == nil || f.p == nil {
		return
	}
	p := f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n - p.onDisk[f]
	p.onDisk[f] = n
	p.maybeDraw()
}

// transferred records n more bytes received and written.
func (f *fileProgress) transferred(n int64) {
	if f == nil || f.p == nil || n == 0 {
		return
	}
	p := f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onDisk[f] += n
	p.done += n
	p.transferred += n
	p.maybeDraw()
}

// fileDone counts a finished file.
func (f *fileProgress) fileDone() {
	if f == nil || f.p == nil {
		return
	}
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	f.p.filesDone++
	f.p.maybeDraw()
}

func (p *Progress) maybeDraw() {
	now := p.now()
	if p.tty {
		if now.Sub(p.lastDraw) >= redrawEvery {
			p.lastDraw = now
			fmt.Fprintf(p.w, "\r%s\x1b[K", p.line(now))
			p.drawn = true
		}
		return
	}
	if p.total > 0 {
		if d := p.done * 10 / p.total; d > p.lastDecile && d < 10 {
			p.lastDecile = d
			fmt.Fprintln(p.w, p.line(now))
		}
	}
}

// Finish draws the final state on its own line.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintln(p.w, p.line(p.now()))
}

// line renders the bar's state at now.
func (p *Progress) line(now time.Time) string {
	elapsed := now.Sub(p.start)
	return renderProgress(p.done, p.total, p.transferred, elapsed, p.filesDone, p.files)
}

// barWidth is the number of cells of the bar itself.
const barWidth = 24

// renderProgress formats one progress line. The speed is the bytes that
// came over the network (not those found on disk) over the time elapsed;
// the time left is the missing bytes at that speed.
func renderProgress(done, total, transferred int64, elapsed time.Duration, filesDone, files int) string {
	var b strings.Builder
	var rate float64
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(transferred) / s
	}
	if total > 0 {
		frac := min(max(float64(done)/float64(total), 0), 1)
		fill := int(frac * barWidth)
		fmt.Fprintf(&b, "%s / %s [%s%s] %3d%%", formatBytes(done), formatBytes(total),
			strings.Repeat("=", fill), strings.Repeat(" ", barWidth-fill), int(frac*100))
	} else {
		fmt.Fprintf(&b, "%s", formatBytes(done))
	}
	fmt.Fprintf(&b, "  %s/s", formatBytes(int64(rate)))
	switch {
	case total > 0 && done >= total:
		fmt.Fprintf(&b, "  in %s", formatDuration(elapsed))
	case total > 0 && rate > 0:
		left := time.Duration(float64(total-done) / rate * float64(time.Second))
		fmt.Fprintf(&b, "  ETA %s", formatDuration(left))
	default:
		b.WriteString("  ETA --")
	}
	fmt.Fprintf(&b, "  %d/%d files", filesDone, files)
	return b.String()
}

// formatBytes prints a size with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i-1])
}

// formatDuration prints a duration rounded to what a reader needs.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
