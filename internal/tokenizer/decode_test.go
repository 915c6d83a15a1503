package tokenizer

import (
	"math/rand/v2"
	"testing"
)

// TestAppendLossy pins the replacement rule of Rust's from_utf8_lossy: one
// U+FFFD per maximal prefix of a valid sequence, and one per other bad byte.
func TestAppendLossy(t *testing.T) {
	cases := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe2\x82", "\uFFFD"},                 // truncated 3-byte sequence: one
		{"\xe2\x82x", "\uFFFDx"},               // ...also when cut by ASCII
		{"\xf0\x80", "\uFFFD\uFFFD"},           // F0 needs 90..BF next: two
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: three
		{"\xc0\xaf", "\uFFFD\uFFFD"},           // overlong lead bytes are never valid
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xff\xfe", "\uFFFD\uFFFD"},
		{"\x80\x80", "\uFFFD\uFFFD"},
	}
	for _, c := range cases {
		if got := string(appendLossy(nil, []byte(c.in))); got != c.want {
			t.Errorf("lossy(%+q) = %+q, want %+q", c.in, got, c.want)
		}
	}
}

// TestStreamDecodeEqualsDecode: for random id sequences, byte-level tokens
// that split characters included, streamed text equals Decode.
func TestStreamDecodeEqualsDecode(t *testing.T) {
	tok := mustQwen3(t)
	r := rand.New(rand.NewPCG(3, 4))
	base := tok.Encode("héllo wörld 你好 😀👍🏽 <|im_end|><think>")
	for range 2000 {
		n := r.IntN(12)
		ids := make([]int, n)
		for i := range ids {
			switch r.IntN(4) {
			case 0:
				ids[i] = r.IntN(256) // single bytes, often half a character
			case 1:
				ids[i] = base[r.IntN(len(base))]
			case 2:
				ids[i] = 151643 + r.IntN(30) // added tokens and out of range
			default:
				ids[i] = r.IntN(151700) - 10
			}
		}
		for _, skip := range []bool{false, true} {
			d := tok.NewStreamDecoder(skip)
			var got string
			for _, id := range ids {
				piece := d.Add(id)
				got += piece
			}
			got += d.Flush()
			if want := tok.Decode(ids, skip); got != want {
				t.Fatalf("ids %v skip=%v: streamed %+q, want %+q", ids, skip, got, want)
			}
		}
	}
}

// TestStreamDecodeHoldsPartialCharacters checks that a character split
// over two byte-level tokens comes out whole, once.
func TestStreamDecodeHoldsPartialCharacters(t *testing.T) {
	tok := mustQwen3(t)
	// "😀" is F0 9F 98 80; the byte tokens are the byte-level symbols.
	id := func(b byte) int {
		i, ok := tok.TokenID(string(byteToRune[b]))
		if !ok {
			t.Fatalf("no token for byte %#x", b)
		}
		return i
	}
	d := tok.NewStreamDecoder(false)
	var outs []string
	for _, b := range []byte{'a', 0xF0, 0x9F, 0x98, 0x80, 'b', 0xE4} {
		outs = append(outs, d.Add(id(b)))
	}
	outs = append(outs, d.Flush())
	want := []string{"a", "", "", "", "😀", "b", "", "\uFFFD"}
	for i := range want {
		if outs[i] != want[i] {
			t.Fatalf("outputs %+q, want %+q", outs, want)
		}
	}
}
