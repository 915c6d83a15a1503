package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// streamCases are texts whose pieces interact across any cut: characters
// NFC composes, added tokens and their prefixes, contractions, whitespace
// runs before letters, CR/LF runs, broken UTF-8, and a run of combining
// marks longer than the 30 golang.org/x/text's NFC stops at.
var streamCases = []string{
	"",
	"Hello, world! How are you doing today?",
	"e\u0301 cafe\u0301 A\u030a \u1100\u1161\u11a8 \u0915\u093c",
	"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nOK<|im_end|>",
	"<|im_sta <|im_end <|im_end|x <think <think>> </think",
	"<|endoftext|><|endoftext|><tool_call></tool_call>",
	"we're it'll THEY'VE i'M 'ſ 're 'r 'l",
	"   \t\t  x\n\n\n  \r\n y   \u2003\u3000z  ",
	"a.\n\n\nb;;;\r\n  !!!  ??",
	"123456 7.5 ١٢٣ ⅻ",
	"\xff\xfe broken \xe2\x82 utf8 \xf0\x9f\x98 end\xe2",
	"Z" + strings.Repeat("\u0301\u0316", 25) + "A" + strings.Repeat("\u0308", 40) + " z",
	"<" + "\u0338 >\u0338 <|im_end|>\u0338",
	"你好，世界！这是一个测试。😀👍🏽 👨‍👩‍👧",
	"x" + strings.Repeat("\u0300", 31) + "\u0323" + "y",
}

func encodeChunks(tok *Tokenizer, chunks []string) []int {
	e := tok.NewStreamEncoder()
	var got []int
	for _, c := range chunks {
		got = append(got, e.Write(c)...)
	}
	return append(got, e.Flush()...)
}

// randomChunks cuts s at random byte offsets, UTF-8 characters included.
func randomChunks(r *rand.Rand, s string) []string {
	var out []string
	for len(s) > 0 {
		n := 1 + r.IntN(min(len(s), 1+r.IntN(12)))
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

func TestStreamEncodeEqualsEncode(t *testing.T) {
	tok := mustQwen3(t)
	texts := slices.Clone(streamCases)
	for _, v := range readJSONL[publicVector](t, "public_vectors.jsonl") {
		texts = append(texts, v.Text)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i, text := range texts {
		want := tok.Encode(text)
		// Every single cut, one byte at a time, and random chunkings.
		byByte := make([]string, len(text))
		for j := 0; j < len(text); j++ {
			byByte[j] = text[j : j+1]
		}
		chunkings := [][]string{{text}, byByte}
		for range 5 {
			chunkings = append(chunkings, randomChunks(r, text))
		}
		for k := 1; k < len(text) && k < 64; k++ {
			chunkings = append(chunkings, []string{text[:k], text[k:]})
		}
		for _, ch := range chunkings {
			if got := encodeChunks(tok, ch); !slices.Equal(got, want) {
				t.Fatalf("text %d %q chunks %q:\n got %v\nwant %v", i, text, ch, got, want)
			}
		}
	}
}

// TestStreamEncodeEmitsEarly checks that final ids are not held back: after
// a chunk, only the pre-token that the next text could still extend waits.
func TestStreamEncodeEmitsEarly(t *testing.T) {
	tok := mustQwen3(t)
	cases := []struct{ write, emitted string }{
		{"Hello, world! How are", "Hello, world! How"},
		{"<|im_start|>user\nhi there", "<|im_start|>user\nhi"},
		{"x <|im_", "x"},
		{"cafe", ""},
		{"it'", "it"},
		{"12", "12"},
		{"a  ", "a"},
	}
	for _, c := range cases {
		e := tok.NewStreamEncoder()
		got := e.Write(c.write)
		if want := tok.Encode(c.emitted); !slices.Equal(got, want) {
			t.Errorf("Write(%q) = %v, want %v (the ids of %q)", c.write, got, want, c.emitted)
		}
		rest := e.Flush()
		if all, want := append(got, rest...), tok.Encode(c.write); !slices.Equal(all, want) {
			t.Errorf("Write(%q)+Flush = %v, want %v", c.write, all, want)
		}
	}
}

func TestStreamEncoderReuseAfterFlush(t *testing.T) {
	tok := mustQwen3(t)
	e := tok.NewStreamEncoder()
	for _, s := range []string{"first text e", "\u0301 second <think>"} {
		got := append(e.Write(s), e.Flush()...)
		if want := tok.Encode(s); !slices.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", s, got, want)
		}
	}
}

// TestStreamEncoderLongHeldWord: a pre-token that may still grow is held
// whole, and looking at it again after every write cost its length each
// time — quadratic over a long one (a run of letters, of combining marks)
// written in small pieces. Past a few hundred bytes the encoder looks
// again only once the held text has grown by a quarter: it looks a
// logarithmic number of times, holds what it was given, and its ids are
// Encode's.
func TestStreamEncoderLongHeldWord(t *testing.T) {
	tok := mustQwen3(t)
	for _, unit := range []string{"aaaa", "\u0301\u0316", "语"} {
		text := "x " + strings.Repeat(unit, (256<<10)/len(unit)) + " end"
		e := tok.NewTextStreamEncoder()
		var got []int
		looks, writes := 0, 0
		for i := 0; i < len(text); i += 4 {
			got = append(got, e.Write(text[i:min(i+4, len(text))])...)
			writes++
			if len(e.tail) == 0 {
				looks++
			}
			if e.Held() > len(text[:min(i+4, len(text))]) {
				t.Fatalf("%q: holds %d bytes of %d written", unit, e.Held(), i+4)
			}
		}
		got = append(got, e.Flush()...)
		if want := tok.EncodeText(text); !slices.Equal(got, want) {
			t.Fatalf("%q: streamed ids differ from EncodeText's (%d against %d ids)", unit, len(got), len(want))
		}
		// heldLook/4 writes before the held text passes heldLook, then one
		// look each time it grows by a quarter (about 30 for 256 KiB).
		if looks > heldLook/4+64 {
			t.Errorf("%q: looked at the held text after %d of %d writes", unit, looks, writes)
		}
	}
}

func FuzzStreamEncode(f *testing.F) {
	tok := mustQwen3(f)
	for _, s := range streamCases {
		f.Add(s, []byte{1, 2, 3, 5, 7})
	}
	f.Fuzz(func(t *testing.T, text string, cuts []byte) {
		if len(text) > 4096 {
			return
		}
		var chunks []string
		rest := text
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(n, int(cuts[i]%16))
			}
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		want := tok.Encode(text)
		if got := encodeChunks(tok, chunks); !slices.Equal(got, want) {
			t.Fatalf("chunks %q:\n got %v\nwant %v", chunks, got, want)
		}
		want = tok.EncodeText(text)
		if got := encodeTextChunks(tok, chunks); !slices.Equal(got, want) {
			t.Fatalf("text chunks %q:\n got %v\nwant %v", chunks, got, want)
		}
		for _, id := range want {
			if _, added := tok.added.ids[tok.idToken[id]]; added {
				t.Fatalf("EncodeText(%q) holds added token %d", text, id)
			}
		}
	})
}

// TestStreamEncoderCopiesIndependent: a copy (CopyTo) and its original go
// on independently, also while a long held word waits in the tail that
// they share: the first append on either side moves its tail.
func TestStreamEncoderCopiesIndependent(t *testing.T) {
	tok := mustQwen3(t)
	prefix := "x " + strings.Repeat("a", 400)
	e := tok.NewTextStreamEncoder()
	got := e.Write(prefix)
	got = append(got, e.Write("aa")...)
	if len(e.tail) == 0 {
		t.Fatalf("the held word is not waiting in the tail (lookAt %d)", e.lookAt)
	}
	var d StreamEncoder
	e.CopyTo(&d)
	gotD := slices.Clone(got)
	got = append(got, e.Write("bbbb")...)
	gotD = append(gotD, d.Write("cccc")...)
	got = append(got, e.Flush()...)
	gotD = append(gotD, d.Flush()...)
	for _, c := range []struct {
		ids  []int
		text string
	}{{got, prefix + "aabbbb"}, {gotD, prefix + "aacccc"}} {
		if want := tok.EncodeText(c.text); !slices.Equal(c.ids, want) {
			t.Errorf("ids %s, want %s", tok.Decode(c.ids, false), c.text)
		}
	}
}
