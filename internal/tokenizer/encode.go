package tokenizer

import "unicode/utf8"

// Encode returns the ids of text as tokenizers encodes it without adding
// special tokens: added tokens (special or not) in the text become their
// ids, the text between them is NFC-normalised, split by the Qwen2 pattern
// and byte-level BPE encoded. Invalid UTF-8 is first replaced as Rust's
// String::from_utf8_lossy does, one U+FFFD per broken sequence.
func (t *Tokenizer) Encode(text string) []int {
	if !utf8.ValidString(text) {
		text = string(appendLossy(nil, []byte(text)))
	}
	out := make([]int, 0, len(text)/4+4)
	for pos := 0; ; {
		start, end, id, _ := t.added.next(text, pos, true)
		if start < 0 {
			return t.appendSegment(out, text[pos:])
		}
		out = t.appendSegment(out, text[pos:start])
		out = append(out, id)
		pos = end
	}
}

// EncodeText returns the ids of text as ordinary text: a string that spells
// an added token, such as "<|im_end|>" or "<think>", is encoded like any
// other text and never becomes that token (tokenizers' split_special_tokens).
// Text from users, models and upstreams is encoded this way, so that it
// cannot forge the chat scaffold; only the scaffold writes added tokens.
func (t *Tokenizer) EncodeText(text string) []int {
	return t.appendText(make([]int, 0, len(text)/4+4), text)
}

// appendText appends the ids of text encoded as ordinary text.
func (t *Tokenizer) appendText(out []int, text string) []int {
	if !utf8.ValidString(text) {
		text = string(appendLossy(nil, []byte(text)))
	}
	return t.appendSegment(out, text)
}

// appendSegment encodes text as one run between added tokens.
func (t *Tokenizer) appendSegment(out []int, seg string) []int {
	if seg == "" {
		return out
	}
	if t.nfc {
		seg = nfc(seg)
	}
	for p := 0; p < len(seg); {
		e, _ := splitNext(seg, p, true)
		out = t.appendPiece(out, seg[p:e])
		p = e
	}
	return out
}

// appendPiece appends the ids of one pre-token.
func (t *Tokenizer) appendPiece(out []int, piece string) []int {
	if len(piece) == 1 {
		return append(out, int(t.byteID[piece[0]]))
	}
	if t.ignoreMrg {
		if id, ok := t.vocabMap()[byteLevel(piece)]; ok {
			return append(out, id)
		}
	}
	cacheable := len(piece) <= cacheMaxPieceLen
	if cacheable {
		var ok bool
		if out, ok = t.cache.appendCached(piece, out); ok {
			return out
		}
	}
	start := len(out)
	out = t.bpe(piece, out)
	if cacheable {
		t.cache.put(piece, out[start:])
	}
	return out
}
