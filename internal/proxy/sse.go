package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// sseEvent is one server-sent event as the upstream wrote it.
type sseEvent struct {
	// raw is the event's bytes verbatim, including the blank line that
	// ends it, so that it can be forwarded unchanged.
	raw []byte
	// data is the event's data lines joined by "\n"; nil when the event
	// has no data field (a comment or keep-alive).
	data []byte
	// name is the value of its last "event" field: the event's type to
	// clients that dispatch on it (the Responses API names each event so,
	// beside the "type" in its data).
	name string
	// bad is why the event cannot be read as every client reads it
	// (addLine); nil for a good one.
	bad error
}

func (ev *sseEvent) fail(err error) {
	if ev.bad == nil {
		ev.bad = err
	}
}

// maxEventBytes bounds one event, so a broken upstream cannot make the
// proxy buffer without limit.
const maxEventBytes = 4 << 20

var errEventTooLarge = fmt.Errorf("upstream event larger than %d bytes", maxEventBytes)

// sseSplitter splits an event stream that arrives in pieces of any size,
// cut anywhere (inside a line, a "\r\n" or a UTF-8 character), into
// events. Lines end with "\n" or "\r\n"; a lone "\r", which clients
// take as a line end too, makes its event bad (addLine). It is the one parser of upstream events: sseReader reads
// an io.Reader through it, and an external driver (Envoy's body chunks)
// pushes what it gets.
type sseSplitter struct {
	ev   sseEvent // the event in progress: raw holds its complete lines
	line []byte   // the line in progress, without its "\n" yet
	// read is set once the stream's first line was read: a byte order
	// mark before it is not part of it (clients drop it, as the SSE
	// standard says, and then show the first event's data; read with the
	// mark, its field would be unknown and its text unjudged). The mark
	// stays in raw, which is forwarded as it came.
	read bool
}

var byteOrderMark = []byte("\uFEFF")

// firstLine drops a byte order mark from the stream's first line.
func (s *sseSplitter) firstLine(body []byte) []byte {
	if s.read {
		return body
	}
	s.read = true
	return bytes.TrimPrefix(body, byteOrderMark)
}

// push takes the next bytes of the stream and returns the events they
// complete, in order. errEventTooLarge means an event grew past
// maxEventBytes: the events before it are returned with the error, and
// the splitter must not be used further.
func (s *sseSplitter) push(b []byte) ([]sseEvent, error) {
	var out []sseEvent
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(s.ev.raw)+len(s.line)+len(b) > maxEventBytes {
				return out, errEventTooLarge
			}
			s.line = append(s.line, b...)
			return out, nil
		}
		part := b[:i+1]
		b = b[i+1:]
		if len(s.ev.raw)+len(s.line)+len(part) > maxEventBytes {
			return out, errEventTooLarge
		}
		line := part
		if len(s.line) > 0 {
			s.line = append(s.line, part...)
			line = s.line
		}
		s.ev.raw = append(s.ev.raw, line...)
		body := s.firstLine(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")))
		if len(body) == 0 {
			out = append(out, s.ev)
			s.ev = sseEvent{}
		} else {
			s.ev.addLine(body) // copies what it keeps
		}
		s.line = s.line[:0]
	}
	return out, nil
}

// end is the end of the stream: it returns what is left. An event cut
// short that carries data is dispatched (some servers end without the
// final blank line); otherwise the left-over bytes (a trailing comment or
// a partial field without data) come with no data, and raw is empty when
// nothing is left.
func (s *sseSplitter) end() sseEvent {
	if len(s.line) > 0 {
		s.ev.raw = append(s.ev.raw, s.line...)
		// Read as push reads a line: a left-over line has no "\n", but may
		// end in "\r"; empty, it is the blank line that ends the event.
		if body := s.firstLine(bytes.TrimSuffix(s.line, []byte("\r"))); len(body) > 0 {
			s.ev.addLine(body)
		}
		s.line = nil
	}
	ev := s.ev
	s.ev = sseEvent{}
	if ev.data != nil {
		return ev
	}
	return sseEvent{raw: ev.raw, bad: ev.bad}
}

// completeEvent returns raw ended as an event: with a line end and the
// blank line after it when the stream ended without them (end). The
// proxy forwards events as it read them, and writes its own events after
// them: one that did not end would run into the next.
func completeEvent(raw []byte) []byte {
	if len(raw) == 0 {
		return raw
	}
	lineEnd := func(b []byte) int {
		switch {
		case bytes.HasSuffix(b, []byte("\r\n")):
			return 2
		case bytes.HasSuffix(b, []byte("\n")), bytes.HasSuffix(b, []byte("\r")):
			return 1
		}
		return 0
	}
	n := lineEnd(raw)
	switch {
	case n == 0:
		return append(raw[:len(raw):len(raw)], "\n\n"...)
	case len(raw) > n && lineEnd(raw[:len(raw)-n]) == 0:
		// The last line ended, the event did not: one more line end of
		// the same kind (a lone "\r" then "\n" would read as one).
		return append(raw[:len(raw):len(raw)], raw[len(raw)-n:]...)
	}
	return raw
}

// sseReader splits an event stream read from an io.Reader into events.
type sseReader struct {
	r     io.Reader
	sp    sseSplitter
	buf   []byte
	queue []sseEvent
	err   error // the reader's error (io.EOF at the end) or the splitter's
	ended bool  // the end's left-over was returned
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: r, buf: make([]byte, 32<<10)}
}

// next returns the next event. At the end of the stream it returns io.EOF,
// after returning a last unterminated event that carries data (some
// servers end without the final blank line); with io.EOF comes the
// left-over bytes of an event without data, if any. Other errors are the
// reader's, or errEventTooLarge.
func (r *sseReader) next() (sseEvent, error) {
	for {
		if len(r.queue) > 0 {
			ev := r.queue[0]
			r.queue = r.queue[1:]
			return ev, nil
		}
		if r.err == io.EOF && !r.ended {
			r.ended = true
			if ev := r.sp.end(); ev.data != nil {
				return ev, nil
			} else if len(ev.raw) > 0 {
				return ev, io.EOF
			}
		}
		if r.err != nil {
			return sseEvent{}, r.err
		}
		n, err := r.r.Read(r.buf)
		if n > 0 {
			evs, perr := r.sp.push(r.buf[:n])
			r.queue = append(r.queue, evs...)
			if perr != nil {
				r.err = perr
				continue
			}
		}
		if err != nil {
			r.err = err
		}
	}
}

// addLine applies one field line (without its line ending). The proxy
// reads only what every client reads the same way: a line holding a "\r"
// (which the standard, and so openai-python and EventSource, take as a
// line end, and this splitter does not) or a line whose field name is not
// a plain word (" data", which some clients trim into data; a JSON body
// sent as a stream, which some clients parse whole) makes the event bad,
// and the relay refuses it rather than forward text it did not read.
// Other fields (id, retry, llama.cpp's error) are ignored, as clients
// ignore them; the event field is kept (name).
func (ev *sseEvent) addLine(line []byte) {
	if bytes.IndexByte(line, '\r') >= 0 {
		ev.fail(errors.New(`a "\r" that does not end a line`))
	}
	name, value, found := bytes.Cut(line, []byte(":"))
	if len(name) == 0 && found {
		return // a comment
	}
	if !fieldName(name) {
		ev.fail(fmt.Errorf("a line that is not an SSE field (%.40q)", line))
		return
	}
	if string(name) == "event" {
		ev.name = string(bytes.TrimPrefix(value, []byte(" ")))
		return
	}
	if string(name) != "data" {
		return
	}
	value = bytes.TrimPrefix(value, []byte(" "))
	if ev.data != nil {
		ev.data = append(ev.data, '\n')
	} else {
		ev.data = []byte{}
	}
	ev.data = append(ev.data, value...)
}

// fieldName reports whether name is a plain word: ASCII letters, digits,
// '-', '_' and '.'.
func fieldName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
