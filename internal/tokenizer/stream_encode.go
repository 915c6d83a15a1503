package tokenizer

import "slices"

// StreamEncoder encodes text that arrives in pieces of any size, such as the
// streamed deltas of another model, emitting each id as soon as no later
// text can change it. For every way of cutting a text into chunks, the ids
// from Write and Flush together equal Encode of the whole text.
//
// Three things can reach across a chunk boundary, and each is held back
// until decided: a UTF-8 character cut in two; the start of what may become
// an added token; and, within the text between added tokens, characters that
// NFC may still combine with what follows (everything after the last
// normalisation boundary) and a pre-token the split pattern may still extend
// or whose lookahead needs the next character.
type StreamEncoder struct {
	t       *Tokenizer
	plain   bool   // text only: added tokens are not matched (EncodeText)
	inBytes []byte // a trailing UTF-8 sequence that is not complete yet
	pending string // text from a position where an added token may start
	segRaw  string // text of the open segment not yet normalised
	segNorm string // normalised text of the open segment not yet split
	// tail is text of the open segment after segRaw that has not been
	// looked at, and lookAt the held length from which to look again
	// (0: after every write). A pre-token that may still grow (a run of
	// letters, of combining marks) is held whole, and looking at it again
	// after every small write costs its length each time: quadratic in a
	// long one. Past heldLook bytes the encoder looks again only once the
	// held text has grown by a quarter, which keeps the work linear; ids
	// are then released up to that much later, never different.
	// tail is only appended to, or replaced. A copy (CopyTo) shares its
	// bytes: only the encoder at tailOwner appends in place, any other
	// first moves the tail, so that saving a copy before each write (as
	// guard.Stream does, to undo a refused one) costs nothing.
	tail      []byte
	tailOwner *StreamEncoder
	lookAt    int
	out       []int
}

// heldLook is the held text, in bytes, past which StreamEncoder looks at
// new text only once the held text has grown by a quarter: longer than
// ordinary words, so that their ids go out at the first write that
// decides them.
const heldLook = 256

// NewStreamEncoder returns an encoder for one text whose ids equal Encode's:
// added tokens spelled in the text become their ids. It is for trusted
// text; see NewTextStreamEncoder.
func (t *Tokenizer) NewStreamEncoder() *StreamEncoder {
	return &StreamEncoder{t: t}
}

// NewTextStreamEncoder returns an encoder for one ordinary text whose ids
// equal EncodeText's: nothing in the text becomes an added token, however
// it is cut into chunks. Streamed model output is encoded this way.
func (t *Tokenizer) NewTextStreamEncoder() *StreamEncoder {
	return &StreamEncoder{t: t, plain: true}
}

// CopyTo sets dst to e's state, reusing dst's memory; dst then goes on
// independently (a caller that may have to take back a Write or Flush
// keeps a copy).
func (e *StreamEncoder) CopyTo(dst *StreamEncoder) {
	// The copy shares the tail's bytes; only the encoder at tailOwner
	// appends into its spare room, so the copy's first append moves it.
	in := append(dst.inBytes[:0], e.inBytes...)
	*dst = *e
	dst.inBytes, dst.out = in, nil
}

// Held is the number of bytes of text written and not yet turned into ids.
func (e *StreamEncoder) Held() int {
	return len(e.inBytes) + len(e.pending) + len(e.segRaw) + len(e.segNorm) + len(e.tail)
}

// Write adds the next chunk of text and returns the ids that are now final.
func (e *StreamEncoder) Write(chunk string) []int {
	e.out = nil
	e.feed(chunk, false)
	return e.out
}

// Flush ends the text, returns the remaining ids and resets the encoder for
// a new text.
func (e *StreamEncoder) Flush() []int {
	e.out = nil
	e.feed("", true)
	out := e.out
	*e = StreamEncoder{t: e.t, plain: e.plain}
	return out
}

func (e *StreamEncoder) feed(chunk string, atEOF bool) {
	t := e.t
	e.inBytes = append(e.inBytes, chunk...)
	valid, n := appendLossyPrefix(nil, e.inBytes, atEOF)
	e.inBytes = append(e.inBytes[:0], e.inBytes[n:]...)
	text := e.pending + string(valid)
	e.pending = ""

	if e.plain {
		e.addSegment(text)
		e.endFeed(atEOF)
		return
	}
	pos := 0
	for {
		start, end, id, undecided := t.added.next(text, pos, atEOF)
		if start >= 0 {
			e.addSegment(text[pos:start])
			e.closeSegment()
			e.out = append(e.out, id)
			pos = end
			continue
		}
		if undecided >= 0 {
			e.addSegment(text[pos:undecided])
			e.pending = text[undecided:]
		} else {
			e.addSegment(text[pos:])
		}
		break
	}
	e.endFeed(atEOF)
}

// addSegment appends text to the open segment: to what advanceSegment
// looks at next, or while it waits for the held text to grow (lookAt), to
// the tail.
func (e *StreamEncoder) addSegment(text string) {
	if e.lookAt > 0 {
		if e.tailOwner != e {
			e.tail, e.tailOwner = slices.Clip(e.tail), e
		}
		e.tail = append(e.tail, text...)
		return
	}
	e.segRaw += text
}

// endFeed closes the segment at the end of the text, or advances it unless
// the held text is waiting to grow.
func (e *StreamEncoder) endFeed(atEOF bool) {
	if atEOF {
		e.closeSegment()
		return
	}
	if e.lookAt > 0 && e.Held() < e.lookAt {
		return
	}
	e.advanceSegment()
}

// takeTail moves the tail into the segment's text. It leaves the tail's
// memory to the copies that share it.
func (e *StreamEncoder) takeTail() {
	if len(e.tail) > 0 {
		e.segRaw += string(e.tail)
	}
	e.tail, e.lookAt = nil, 0
}

// advanceSegment normalises the open segment up to its last NFC boundary
// and emits the pre-tokens that are final.
func (e *StreamEncoder) advanceSegment() {
	e.takeTail()
	if e.t.nfc {
		if b := LastNFCBoundary(e.segRaw); b > 0 {
			e.segNorm += nfc(e.segRaw[:b])
			e.segRaw = e.segRaw[b:]
		}
	} else {
		e.segNorm += e.segRaw
		e.segRaw = ""
	}
	s := e.segNorm
	p := 0
	for p < len(s) {
		end, ok := splitNext(s, p, false)
		if !ok {
			break
		}
		e.out = e.t.appendPiece(e.out, s[p:end])
		p = end
	}
	e.segNorm = s[p:]
	if held := len(e.segRaw) + len(e.segNorm); held > heldLook {
		e.lookAt = held + held/4
	}
}

// closeSegment ends the open segment: the text that follows is an added
// token or nothing, which the split pattern sees as the end of the text.
func (e *StreamEncoder) closeSegment() {
	e.takeTail()
	s := e.segNorm
	if e.t.nfc {
		s += nfc(e.segRaw)
	} else {
		s += e.segRaw
	}
	for p := 0; p < len(s); {
		end, _ := splitNext(s, p, true)
		e.out = e.t.appendPiece(e.out, s[p:end])
		p = end
	}
	e.segRaw, e.segNorm = "", ""
}
