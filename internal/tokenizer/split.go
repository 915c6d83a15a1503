package tokenizer

// splitNext returns the end of the pre-token that starts at p in s, as the
// Qwen2 split pattern
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// matches it with backtracking alternation (the first alternative that
// matches wins, quantifiers greedy). Every character matches some
// alternative, so the pre-tokens tile the text.
//
// With atEOF false, s is a prefix of longer text: ok is false when the
// pre-token's extent depends on characters after s (the match could grow,
// or a lookahead needs the next character). A pre-token returned with ok is
// final whatever follows.
func splitNext(s string, p int, atEOF bool) (end int, ok bool) {
	n := len(s)
	c, w := decodeAt(s, p)
	q := p + w

	// (?i:'s|'t|'re|'ve|'m|'ll|'d); case folding also maps U+017F (long s)
	// to s.
	if c == '\'' && q < n {
		c2, w2 := decodeAt(s, q)
		var want rune
		switch c2 {
		case 's', 'S', 'ſ', 't', 'T', 'm', 'M', 'd', 'D':
			return q + w2, true
		case 'r', 'R', 'v', 'V':
			want = 'e'
		case 'l', 'L':
			want = 'l'
		}
		if want != 0 {
			r := q + w2
			if r >= n {
				if !atEOF {
					return 0, false
				}
			} else if c3 := s[r]; rune(c3) == want || rune(c3) == want-'a'+'A' {
				return r + 1, true
			}
		}
	}

	cl := class(c)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if cl&clsL != 0 {
		return letterRun(s, q, atEOF)
	}
	if cl&(clsN|clsNL) == 0 {
		if q >= n {
			if !atEOF {
				return 0, false
			}
		} else if c2, w2 := decodeAt(s, q); class(c2)&clsL != 0 {
			return letterRun(s, q+w2, atEOF)
		}
	}
	// \p{N}
	if cl&clsN != 0 {
		return q, true
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	start := -1
	if isPunct(cl) {
		start = p
	} else if c == ' ' && q < n {
		if c2, _ := decodeAt(s, q); isPunct(class(c2)) {
			start = q
		}
	}
	if start >= 0 {
		e := start
		for e < n {
			r, rw := decodeAt(s, e)
			if !isPunct(class(r)) {
				break
			}
			e += rw
		}
		for e < n && (s[e] == '\r' || s[e] == '\n') {
			e++
		}
		if e == n && !atEOF {
			return 0, false
		}
		return e, true
	}

	// c is whitespace. Find the whole run first: \s*[\r\n]+ ends after the
	// run's last line break, \s+(?!\S) leaves the run's last character for
	// the next pre-token unless the run ends the text, and \s+ takes a
	// lone whitespace character before a non-space.
	e, last, lastNL := q, p, -1
	if c == '\r' || c == '\n' {
		lastNL = q
	}
	for e < n {
		r, rw := decodeAt(s, e)
		if class(r)&clsS == 0 {
			break
		}
		if r == '\r' || r == '\n' {
			lastNL = e + rw
		}
		last = e
		e += rw
	}
	if e == n && !atEOF {
		return 0, false
	}
	if lastNL >= 0 {
		return lastNL, true
	}
	if e == n || last == p {
		return e, true
	}
	return last, true
}

func letterRun(s string, e int, atEOF bool) (int, bool) {
	n := len(s)
	for e < n {
		if c := s[e]; c < 0x80 {
			if bmpClass[c]&clsL == 0 {
				return e, true
			}
			e++
			continue
		}
		r, w := decodeAt(s, e)
		if class(r)&clsL == 0 {
			return e, true
		}
		e += w
	}
	if !atEOF {
		return 0, false
	}
	return e, true
}
