package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAllEvents(t testing.TB, r io.Reader) ([]sseEvent, error) {
	rd := newSSEReader(r)
	var out []sseEvent
	for {
		ev, err := rd.next()
		if len(ev.raw) > 0 {
			out = append(out, ev)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
	}
}

func TestSSEReader(t *testing.T) {
	in := ": keep-alive\n\n" +
		"data: {\"a\":1}\n\n" +
		"event: x\r\ndata:two\r\ndata:  lines\r\n\r\n" +
		"id: 7\nretry: 10\n\n" +
		"data: [DONE]" // no final blank line
	want := []struct {
		raw  string
		data any
	}{
		{": keep-alive\n\n", nil},
		{"data: {\"a\":1}\n\n", `{"a":1}`},
		{"event: x\r\ndata:two\r\ndata:  lines\r\n\r\n", "two\n lines"},
		{"id: 7\nretry: 10\n\n", nil},
		{"data: [DONE]", "[DONE]"},
	}
	// Reading one byte at a time must not change anything.
	for _, r := range []io.Reader{strings.NewReader(in), iotest.OneByteReader(strings.NewReader(in))} {
		evs, err := readAllEvents(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != len(want) {
			t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
		}
		for i, ev := range evs {
			if string(ev.raw) != want[i].raw {
				t.Errorf("event %d raw %q, want %q", i, ev.raw, want[i].raw)
			}
			switch w := want[i].data.(type) {
			case nil:
				if ev.data != nil {
					t.Errorf("event %d data %q, want none", i, ev.data)
				}
			case string:
				if string(ev.data) != w {
					t.Errorf("event %d data %q, want %q", i, ev.data, w)
				}
			}
		}
	}
}

func TestSSEReaderLimits(t *testing.T) {
	big := "data: " + strings.Repeat("x", maxEventBytes) + "\n\n"
	if _, err := readAllEvents(t, strings.NewReader(big)); !errors.Is(err, errEventTooLarge) {
		t.Fatalf("oversized event: %v", err)
	}
	// A line longer than the reader's buffer but within the limit is read whole.
	long := "data: " + strings.Repeat("y", 100<<10) + "\n\n"
	evs, err := readAllEvents(t, strings.NewReader(long))
	if err != nil || len(evs) != 1 || len(evs[0].data) != 100<<10 {
		t.Fatalf("long line: %d events, %v", len(evs), err)
	}
	broken := iotest.TimeoutReader(strings.NewReader("data: 1\n\ndata: 2"))
	if _, err := readAllEvents(t, broken); !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("reader error not returned: %v", err)
	}
}

// FuzzSSEReader: the events' raw bytes put back together are the input;
// an event is bad exactly when one of its lines holds a "\r" that does not
// end it or is not a comment and names no plain-word field; and
// a good event's data is what a line-by-line reading of its raw bytes
// gives.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\ndata: c\r\n\r\n: x\n\n"))
	f.Add([]byte("data"))
	f.Add([]byte("\n\n\r\n:\ndata:\n\n"))
	f.Add([]byte("\uFEFFdata: a\n\n\uFEFFdata: b\n\n"))
	f.Add([]byte(": x\rdata: a\n\n data: b\n\nevent: e\nid: 1\nretry: 5\nerror: x\ndata: c\n\n{}\n\ndata: d\r\n\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		evs, err := readAllEvents(t, bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		var joined []byte
		for i, ev := range evs {
			joined = append(joined, ev.raw...)
			var data []byte
			bad := false
			for j, line := range strings.SplitAfter(string(ev.raw), "\n") {
				line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
				if i == 0 && j == 0 {
					line = strings.TrimPrefix(line, "\uFEFF") // the stream's byte order mark
				}
				if line == "" {
					continue // the blank line that ends the event
				}
				if strings.Contains(line, "\r") {
					bad = true
				}
				name, v, _ := strings.Cut(line, ":")
				word := name != "" && strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == ""
				switch {
				case strings.HasPrefix(line, ":"), word && name != "data":
				case name == "data":
					if data != nil {
						data = append(data, '\n')
					} else {
						data = []byte{}
					}
					data = append(data, strings.TrimPrefix(v, " ")...)
				default:
					bad = true
				}
			}
			if bad != (ev.bad != nil) {
				t.Fatalf("event %q: bad %v, want %v", ev.raw, ev.bad, bad)
			}
			if !bad && (!bytes.Equal(data, ev.data) || (data == nil) != (ev.data == nil)) {
				t.Fatalf("event %q: data %q, want %q", ev.raw, ev.data, data)
			}
		}
		if !bytes.Equal(joined, in) {
			t.Fatalf("raw bytes do not add up to the input:\n got %q\nwant %q", joined, in)
		}
	})
}

// splitAll pushes in to a splitter in pieces of the given sizes (cycled)
// and returns the events, the end's left-over included.
func splitAll(in []byte, sizes []int) ([]sseEvent, error) {
	var sp sseSplitter
	var out []sseEvent
	for i := 0; len(in) > 0; i++ {
		n := min(max(sizes[i%len(sizes)], 1), len(in))
		evs, err := sp.push(in[:n])
		out = append(out, evs...)
		if err != nil {
			return out, err
		}
		in = in[n:]
	}
	if ev := sp.end(); len(ev.raw) > 0 {
		out = append(out, ev)
	}
	return out, nil
}

// FuzzSSESplitter: pushed in pieces of any size, cut anywhere, an event
// stream splits into the events a reading of it whole gives.
func FuzzSSESplitter(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\ndata: c\r\n\r\n: x\n\ndata: [DONE]"), []byte{1, 2, 3})
	f.Add([]byte("data: h\xc3\xa9llo\n\n\n\r\n:\ndata:\n\ndata"), []byte{7})
	f.Fuzz(func(t *testing.T, in []byte, cuts []byte) {
		want, err := readAllEvents(t, bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		sizes := []int{len(in)}
		if len(cuts) > 0 {
			sizes = sizes[:0]
			for _, c := range cuts {
				sizes = append(sizes, int(c))
			}
		}
		got, err := splitAll(in, sizes)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d events in pieces %v, %d whole", len(got), sizes, len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i].raw, want[i].raw) || !bytes.Equal(got[i].data, want[i].data) || (got[i].data == nil) != (want[i].data == nil) || (got[i].bad == nil) != (want[i].bad == nil) {
				t.Fatalf("event %d: %q/%q, whole %q/%q", i, got[i].raw, got[i].data, want[i].raw, want[i].data)
			}
		}
	})
}

func TestSSESplitterLimits(t *testing.T) {
	big := []byte("data: 1\n\ndata: " + strings.Repeat("x", maxEventBytes) + "\n\n")
	evs, err := splitAll(big, []int{4096})
	if !errors.Is(err, errEventTooLarge) || len(evs) != 1 {
		t.Fatalf("oversized event: %d events, %v", len(evs), err)
	}
}

func TestCompleteEvent(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"data: x\n\n":       "data: x\n\n",
		"data: x\r\n\r\n":   "data: x\r\n\r\n",
		"data: x\r\r":       "data: x\r\r",
		"data: x":           "data: x\n\n",
		"data: x\n":         "data: x\n\n",
		"data: x\r\n":       "data: x\r\n\r\n",
		"data: x\r":         "data: x\r\r",
		": keep-alive":      ": keep-alive\n\n",
		"event: a\ndata: b": "event: a\ndata: b\n\n",
		"\n":                "\n",
	} {
		if got := string(completeEvent([]byte(in))); got != want {
			t.Errorf("completeEvent(%q) = %q, want %q", in, got, want)
		}
	}
}

// A byte order mark opens the stream, not its first line: the first
// event's data is read (and judged) as a client that drops the mark shows
// it, and the mark is still forwarded; a mark later is part of its line.
func TestSSEByteOrderMark(t *testing.T) {
	in := "\uFEFFdata: a\n\n\uFEFFdata: b\n\ndata: c\n\n"
	for _, sizes := range [][]int{{1}, {2}, {len(in)}} {
		evs, err := splitAll([]byte(in), sizes)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 || string(evs[0].data) != "a" || evs[1].data != nil || string(evs[2].data) != "c" || string(evs[0].raw) != "\uFEFFdata: a\n\n" {
			t.Fatalf("sizes %v: %+v", sizes, evs)
		}
	}
}

// A stream's last event ended by a lone "\r" (the standard's blank line),
// or a stream of a byte order mark alone, is no bad line.
func TestSSEEndBlankLine(t *testing.T) {
	for _, in := range []string{"data: {}\r\n\r", "\uFEFF", "data: {}\n\r"} {
		evs, err := splitAll([]byte(in), []int{1})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.bad != nil {
				t.Errorf("%q: event %q bad: %v", in, ev.raw, ev.bad)
			}
		}
	}
}
