package hub

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRenderProgress(t *testing.T) {
	tests := []struct {
		done, total, transferred int64
		elapsed                  time.Duration
		fd, f                    int
		want                     string
	}{
		{0, 1 << 30, 0, 0, 0, 3, "0 B / 1.0 GiB [                        ]   0%  0 B/s  ETA --  0/3 files"},
		// 256 MiB of 1 GiB at 32 MiB/s: 768 MiB left, 24 s.
		{256 << 20, 1 << 30, 256 << 20, 8 * time.Second, 1, 3, "256.0 MiB / 1.0 GiB [======                  ]  25%  32.0 MiB/s  ETA 24s  1/3 files"},
		// Half found on disk (resumed): the speed counts only what arrived.
		{768 << 20, 1 << 30, 256 << 20, 128 * time.Second, 2, 3, "768.0 MiB / 1.0 GiB [==================      ]  75%  2.0 MiB/s  ETA 2m08s  2/3 files"},
		{1 << 30, 1 << 30, 1 << 30, 2 * time.Hour, 3, 3, "1.0 GiB / 1.0 GiB [========================] 100%  145.6 KiB/s  in 2h00m  3/3 files"},
		{500, -1, 500, time.Second, 0, 1, "500 B  500 B/s  ETA --  0/1 files"},
	}
	for _, tc := range tests {
		if got := renderProgress(tc.done, tc.total, tc.transferred, tc.elapsed, tc.fd, tc.f); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestProgressLinesInALog(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, 1000, 2)
	clock := p.start
	p.now = func() time.Time { return clock }
	a, b := p.file(), p.file()
	a.set(250) // found on disk: 25%
	clock = clock.Add(time.Second)
	for range 5 {
		b.transferred(100)
	}
	a.fileDone()
	a.set(0) // a corrupt copy thrown away
	a.transferred(500)
	b.fileDone()
	p.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"250 B / 1000 B [======                  ]  25%  0 B/s  ETA --  0/2 files",
		"350 B / 1000 B [========                ]  35%  100 B/s  ETA 7s  0/2 files",
		"450 B / 1000 B [==========              ]  45%  200 B/s  ETA 3s  0/2 files",
		"550 B / 1000 B [=============           ]  55%  300 B/s  ETA 2s  0/2 files",
		"650 B / 1000 B [===============         ]  65%  400 B/s  ETA 1s  0/2 files",
		"750 B / 1000 B [==================      ]  75%  500 B/s  ETA 1s  0/2 files",
		"1000 B / 1000 B [========================] 100%  1000 B/s  in 1s  2/2 files",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	var nilP *Progress
	nilP.file().set(5)
	nilP.Finish()
}
