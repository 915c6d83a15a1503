package eval

import (
	"bytes"
	"fmt"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// byteLevelRune maps the GPT-2 byte-level alphabet back to bytes: the
// printable Latin-1 bytes stand for themselves, the 68 others were moved
// to U+0100 onwards in byte order.
var byteLevelRune = func() map[rune]byte {
	m := make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[rune(b)] = byte(b)
		} else {
			m[256+n] = byte(b)
			n++
		}
	}
	return m
}()

// tokenBytes is the raw bytes of one token: an added token's text, or a
// vocabulary entry mapped back from the byte-level alphabet. Byte offsets
// need the exact bytes; decoding a lone token would turn a split UTF-8
// character into U+FFFD.
func tokenBytes(tok *tokenizer.Tokenizer, id int) []byte {
	s, ok := tok.IDToken(id)
	if !ok {
		return nil
	}
	if added, ok := tok.TokenID(s); ok && added == id && tok.IsSpecial(id) {
		return []byte(s)
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := byteLevelRune[r]
		if !ok {
			return []byte(s) // an added token written as plain text
		}
		out = append(out, b)
	}
	return out
}

// locateSpan finds text in the judged response tokens ids, whose first
// token is at position start, and returns the positions of the first and
// last token that overlap it.
func locateSpan(tok *tokenizer.Tokenizer, ids []int, start int, text string) (first, last int, err error) {
	var all []byte
	ends := make([]int, len(ids)) // byte offset just after each token
	for i, id := range ids {
		all = append(all, tokenBytes(tok, id)...)
		ends[i] = len(all)
	}
	text = tokenizer.NFC(text) // the tokens' text is normalized
	at := bytes.Index(all, []byte(text))
	if at < 0 || text == "" {
		return -1, -1, fmt.Errorf("unsafe_text %q is not in the response as rendered and tokenized", text)
	}
	endByte := at + len(text) - 1
	first, last = -1, -1
	for i, e := range ends {
		if first < 0 && e > at {
			first = i
		}
		if e > endByte {
			last = i
			break
		}
	}
	return start + first, start + last, nil
}
