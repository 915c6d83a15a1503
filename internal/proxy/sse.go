package proxy

import (
	"bufio"
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
}

// maxEventBytes bounds one event, so a broken upstream cannot make the
// proxy buffer without limit.
const maxEventBytes = 4 << 20

// sseReader splits an event stream into events. Lines end with "\n" or
// "\r\n" (a lone "\r" line ending is not supported).
type sseReader struct {
	br *bufio.Reader
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 32<<10)}
}

var errEventTooLarge = fmt.Errorf("upstream event larger than %d bytes", maxEventBytes)

// next returns the next event. At the end of the stream it returns io.EOF,
// after returning a last unterminated event that carries data (some
// servers end without the final blank line); other errors are the
// reader's.
func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := r.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Long line: gather it whole.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(ev.raw)+len(full) > maxEventBytes {
					return sseEvent{}, errEventTooLarge
				}
				line, err = r.br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if len(ev.raw)+len(line) > maxEventBytes {
			return sseEvent{}, errEventTooLarge
		}
		ev.raw = append(ev.raw, line...)
		if err != nil {
			if err == io.EOF {
				if len(line) > 0 {
					ev.addLine(line)
				}
				if ev.data != nil {
					return ev, nil
				}
				if len(ev.raw) > 0 {
					// A trailing comment or a partial field without data:
					// nothing to dispatch.
					return sseEvent{raw: ev.raw}, io.EOF
				}
			}
			return sseEvent{}, err
		}
		body := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(body) == 0 {
			return ev, nil
		}
		ev.addLine(body)
	}
}

// addLine applies one field line (without its line ending).
func (ev *sseEvent) addLine(line []byte) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	name, value, found := bytes.Cut(line, []byte(":"))
	if len(name) == 0 && found {
		return // a comment
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
