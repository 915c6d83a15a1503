package tokenizer

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Character classes of the split pattern: \p{L}, \p{N}, \s (Unicode
// White_Space, not Go regexp's ASCII \s) and [\r\n].
const (
	clsL  = 1 << iota // \p{L}
	clsN              // \p{N}
	clsS              // \s
	clsNL             // \r or \n
)

// bmpClass caches the classes of the Basic Multilingual Plane, where nearly
// all text lives; rarer runes ask the unicode package.
var (
	bmpClass     [0x10000]uint8
	bmpClassOnce sync.Once
)

func initClasses() {
	bmpClassOnce.Do(func() {
		for r := rune(0); r < 0x10000; r++ {
			bmpClass[r] = slowClass(r)
		}
	})
}

func slowClass(r rune) uint8 {
	var c uint8
	if unicode.IsLetter(r) {
		c |= clsL
	}
	if unicode.IsNumber(r) {
		c |= clsN
	}
	if unicode.IsSpace(r) {
		c |= clsS
	}
	if r == '\r' || r == '\n' {
		c |= clsNL
	}
	return c
}

func class(r rune) uint8 {
	if r < 0x10000 {
		return bmpClass[r]
	}
	return slowClass(r)
}

// decodeAt returns the rune at s[i] and its width; s is valid UTF-8.
func decodeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// isPunct is [^\s\p{L}\p{N}].
func isPunct(c uint8) bool { return c&(clsL|clsN|clsS) == 0 }
