package tokenizer

import "unicode/utf8"

// byteToRune is the byte-level alphabet of GPT-2 style BPE: printable
// Latin-1 bytes stand for themselves and the other 68 bytes are shifted to
// U+0100 onwards, so that every byte is a visible character in the vocab.
var byteToRune [256]rune

// runeToByte inverts byteToRune; entries for runes outside the alphabet are
// -1.
var runeToByte [324]int16

func init() {
	for i := range runeToByte {
		runeToByte[i] = -1
	}
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = 256 + n
			n++
		}
		runeToByte[byteToRune[b]] = int16(b)
	}
}

// appendTokenBytes appends what the ByteLevel decoder makes of one token:
// its characters mapped back to bytes, or, if any character is outside the
// byte-level alphabet, the token's own UTF-8 bytes unchanged.
func appendTokenBytes(dst []byte, tok string) []byte {
	n := len(dst)
	for _, r := range tok {
		if r < 0 || int(r) >= len(runeToByte) || runeToByte[r] < 0 {
			return append(dst[:n], tok...)
		}
		dst = append(dst, byte(runeToByte[r]))
	}
	return dst
}

// byteLevel maps raw bytes to the byte-level form used by vocab entries.
func byteLevel(s string) string {
	out := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		out = utf8.AppendRune(out, byteToRune[s[i]])
	}
	return string(out)
}
