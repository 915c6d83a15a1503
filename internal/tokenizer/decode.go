package tokenizer

import (
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func (t *Tokenizer) buildDecodeTable() {
	t.idOff = make([]uint32, len(t.idToken)+1)
	// Sized once: a token's bytes are never longer than its text (a
	// byte-level symbol is one or two UTF-8 bytes for one byte), and a
	// fresh process pays for every page a growing slice copies.
	size := 0
	for _, tok := range t.idToken {
		size += len(tok)
	}
	t.idBytes = make([]byte, 0, size)
	for id, tok := range t.idToken {
		t.idOff[id] = uint32(len(t.idBytes))
		if !t.present[id] {
			continue
		}
		if _, isAdded := t.added.ids[tok]; isAdded && t.added.ids[tok] == id {
			// Added tokens are written as they are.
			t.idBytes = append(t.idBytes, tok...)
		} else {
			n := len(t.idBytes)
			t.idBytes = appendTokenBytes(t.idBytes, tok)
			t.maxTokenBytes = max(t.maxTokenBytes, len(t.idBytes)-n)
		}
	}
	t.idOff[len(t.idToken)] = uint32(len(t.idBytes))
}

// MaxTokenBytes is the most bytes of text one id of the model's vocabulary
// (not an added token) stands for: n ids of text span at most n times as
// many bytes of normalised text.
func (t *Tokenizer) MaxTokenBytes() int { return t.maxTokenBytes }

// MinIDs is a lower bound on the ids text of n bytes encodes to (without
// added tokens): each id stands for at most MaxTokenBytes bytes of
// normalised text, and NFC makes text at most three times shorter (a
// Hangul syllable from its three jamo; K from the Kelvin sign), so a
// quarter of n over MaxTokenBytes is safe.
func (t *Tokenizer) MinIDs(n int) int {
	if t.maxTokenBytes == 0 {
		return 0
	}
	return n / (4 * t.maxTokenBytes)
}

// MaxIDs is an upper bound on the ids text encodes to (without added
// tokens): each id stands for at least one byte of normalised text, and
// NFC is never longer than the canonical decomposition (composition only
// joins), so the length of NFD bounds it: ASCII a byte each, most other
// text as long as it is, what NFC lengthens (U+1D160, 4 bytes, is 12)
// as long as it becomes.
func MaxIDs(text string) int {
	for i := 0; i < len(text); i++ {
		if text[i] >= utf8.RuneSelf {
			return i + len(norm.NFD.String(text[i:]))
		}
	}
	return len(text)
}

// MaxIDsPerByte bounds the ids a byte of text may encode to (NFD makes
// UTF-8 text at most three times longer), for text whose bytes are not
// known (what an encoder holds back).
const MaxIDsPerByte = 3

// appendIDBytes appends the bytes id decodes to; ids with no token, and
// special ids when skipSpecial is set, add nothing.
func (t *Tokenizer) appendIDBytes(dst []byte, id int, skipSpecial bool) []byte {
	if id < 0 || id >= len(t.idToken) || !t.present[id] || (skipSpecial && t.special[id]) {
		return dst
	}
	return append(dst, t.idBytes[t.idOff[id]:t.idOff[id+1]]...)
}

// Decode returns the text of ids: their bytes concatenated and read as UTF-8
// the way Rust's String::from_utf8_lossy does (one U+FFFD per broken
// sequence). Ids with no token are dropped, and so are special added tokens
// when skipSpecial is set.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	buf := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		buf = t.appendIDBytes(buf, id, skipSpecial)
	}
	if utf8.Valid(buf) {
		return string(buf)
	}
	return string(appendLossy(nil, buf))
}

// utf8Step examines the sequence starting at b[0] the way Rust's
// Utf8Chunks does. It returns the sequence's length n and whether it is a
// valid character; an invalid one (a maximal prefix of a would-be sequence)
// becomes one U+FFFD. incomplete reports an invalid sequence cut short by
// the end of b, which more bytes might still complete.
func utf8Step(b []byte) (n int, valid, incomplete bool) {
	c := b[0]
	if c < 0x80 {
		return 1, true, false
	}
	var width int
	switch {
	case c >= 0xC2 && c <= 0xDF:
		width = 2
	case c >= 0xE0 && c <= 0xEF:
		width = 3
	case c >= 0xF0 && c <= 0xF4:
		width = 4
	default:
		return 1, false, false
	}
	if len(b) < 2 {
		return 1, false, true
	}
	c1 := b[1]
	lo, hi := byte(0x80), byte(0xBF)
	switch c {
	case 0xE0:
		lo = 0xA0
	case 0xED:
		hi = 0x9F
	case 0xF0:
		lo = 0x90
	case 0xF4:
		hi = 0x8F
	}
	if c1 < lo || c1 > hi {
		return 1, false, false
	}
	for i := 2; i < width; i++ {
		if len(b) <= i {
			return i, false, true
		}
		if b[i]&0xC0 != 0x80 {
			return i, false, false
		}
	}
	return width, true, false
}

// appendLossy appends b to dst with each broken UTF-8 sequence replaced by
// U+FFFD.
func appendLossy(dst, b []byte) []byte {
	dst, _ = appendLossyPrefix(dst, b, true)
	return dst
}

// appendLossyPrefix is appendLossy for b that may continue: unless atEOF,
// it stops before a trailing sequence that more bytes could still complete
// and returns how many bytes of b it consumed.
func appendLossyPrefix(dst, b []byte, atEOF bool) ([]byte, int) {
	i := 0
	for i < len(b) {
		if b[i] < 0x80 {
			dst = append(dst, b[i])
			i++
			continue
		}
		n, valid, incomplete := utf8Step(b[i:])
		switch {
		case valid:
			dst = append(dst, b[i:i+n]...)
		case incomplete && !atEOF:
			return dst, i
		default:
			dst = append(dst, "\uFFFD"...)
		}
		i += n
	}
	return dst, i
}

// StreamDecoder turns ids into text as they arrive, holding back bytes of a
// character that is not complete yet. The concatenation of everything Add
// and Flush return equals Decode of all the ids.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []byte
	out         []byte
}

// NewStreamDecoder returns a decoder for one stream of ids.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial}
}

// CopyTo sets dst to d's state, reusing dst's memory; dst then goes on
// independently.
func (d *StreamDecoder) CopyTo(dst *StreamDecoder) {
	pending, out := append(dst.pending[:0], d.pending...), dst.out[:0]
	*dst = *d
	dst.pending, dst.out = pending, out
}

// Add decodes one more id and returns the text that is now complete.
func (d *StreamDecoder) Add(id int) string {
	d.pending = d.t.appendIDBytes(d.pending, id, d.skipSpecial)
	return d.emit(false)
}

// Flush returns the held-back bytes, a broken final character as U+FFFD, and
// resets the decoder for a new stream.
func (d *StreamDecoder) Flush() string {
	return d.emit(true)
}

func (d *StreamDecoder) emit(atEOF bool) string {
	var n int
	d.out, n = appendLossyPrefix(d.out[:0], d.pending, atEOF)
	d.pending = append(d.pending[:0], d.pending[n:]...)
	return string(d.out)
}
