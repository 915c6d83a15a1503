package chatmsg

import (
	"strings"
	"unicode"
	"unicode/utf16"
)

// Unescaper decodes the \uXXXX escapes of JSON text that comes in pieces
// (an escape may be cut between two), surrogate pairs included, and
// leaves everything else as it came: "\\u0045" is an escaped backslash
// before "u0045", and a lone surrogate's escape stays an escape. An
// answer's tool-call arguments are JSON text an agent runs once its parser
// has decoded them: the guard reads them so (the model that wrote them
// and a model reading them back read the escapes, which the request side
// judges as they are).
type Unescaper struct {
	pend string // the start of an escape the next piece completes
}

func (u *Unescaper) Write(s string) string {
	if u.pend == "" && strings.IndexByte(s, '\\') < 0 {
		return s // no escape: as it came
	}
	s = u.pend + s
	u.pend = ""
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 == len(s) {
			u.pend = s[i:]
			break
		}
		if s[i+1] != 'u' {
			b.WriteString(s[i : i+2]) // \\, \", \n...: two characters kept
			i += 2
			continue
		}
		r, n, complete := unicodeEscape(s[i:])
		if !complete {
			u.pend = s[i:]
			break
		}
		if r < 0 {
			b.WriteString(s[i : i+n]) // not an escape of a character
		} else {
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// Flush returns an escape left incomplete at the end, as it came.
func (u *Unescaper) Flush() string {
	p := u.pend
	u.pend = ""
	return p
}

// unicodeEscape reads the \uXXXX escape at the start of s (and the low
// surrogate's after a high one): the character and the bytes it spans, or
// r < 0 and the bytes to keep as they are (not hex, a lone surrogate);
// complete is false when s ends before that is known.
func unicodeEscape(s string) (r rune, n int, complete bool) {
	hi, ok, complete := hex4(s)
	if !complete {
		return 0, 0, false
	}
	if !ok {
		return -1, 2, true
	}
	if !utf16.IsSurrogate(rune(hi)) {
		return rune(hi), 6, true
	}
	if hi >= 0xdc00 { // a low surrogate first
		return -1, 6, true
	}
	rest := s[6:]
	if len(rest) < 2 {
		if len(rest) == 0 || rest[0] == '\\' {
			return 0, 0, false
		}
		return -1, 6, true
	}
	if rest[0] != '\\' || rest[1] != 'u' {
		return -1, 6, true
	}
	lo, ok, complete := hex4(rest)
	if !complete {
		return 0, 0, false
	}
	if r := utf16.DecodeRune(rune(hi), rune(lo)); ok && r != unicode.ReplacementChar {
		return r, 12, true
	}
	return -1, 6, true
}

// hex4 reads "\u" and four hex digits at the start of s.
func hex4(s string) (v uint16, ok, complete bool) {
	for i := 2; i < 6; i++ {
		if i == len(s) {
			return 0, false, false
		}
		d, isHex := hexDigit(s[i])
		if !isHex {
			return 0, false, true
		}
		v = v<<4 | d
	}
	return v, true, true
}

func hexDigit(c byte) (uint16, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint16(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint16(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint16(c-'A') + 10, true
	}
	return 0, false
}

// Unescape is Unescaper over a whole text.
func Unescape(s string) string {
	var u Unescaper
	return u.Write(s) + u.Flush()
}
