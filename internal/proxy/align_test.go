package proxy

import (
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
	"golang.org/x/text/unicode/norm"
)

// TestAlignerNFC: where the fed text is not in NFC, the decoded text (NFC)
// differs; offsets inside the changed stretch map to its start, and the
// mapping resumes exactly after it.
func TestAlignerNFC(t *testing.T) {
	fed := []byte("Cafe\u0301 au lait") // decomposed é
	dec := norm.NFC.Bytes(fed)          // "Café au lait"
	a := newAligner()
	// Decoded text arrives a few bytes at a time, as tokens are judged.
	for i := 0; i < len(dec); i += 3 {
		a.addDecoded(string(dec[i:min(i+3, len(dec))]))
		a.sync(fed, false)
	}
	a.sync(fed, true)
	for d, want := range map[int]int{
		0: 0, 3: 3, // "Caf"
		4: 3, // inside "é" (2 bytes decoded, 3 fed): not yet covered
		5: 6, // after "é"
		6: 7, 13: 14,
	} {
		if got := a.fedOffset(d); got != want {
			t.Errorf("decoded offset %d maps to %d, want %d", d, got, want)
		}
	}
	if a.stuck {
		t.Error("the aligner gave up on a plain decomposed accent")
	}
}

// TestAlignerStuck: a decoded text that is not the NFC form of the fed
// text stops the mapping at the last agreed offset.
func TestAlignerStuck(t *testing.T) {
	a := newAligner()
	a.addDecoded("abcXdef")
	a.sync([]byte("abcYdef"), true)
	if !a.stuck {
		t.Fatal("not stuck")
	}
	for _, d := range []int{3, 4, 7} {
		if got := a.fedOffset(d); got > 3 {
			t.Errorf("decoded offset %d maps to %d, past the last agreed byte 3", d, got)
		}
	}
}

// TestAlignerZalgo: the aligner's NFC is the tokenizer's exact one (no
// stream-safe CGJ after 30 non-starters). With golang.org/x/text's, a
// response holding a run of more than 30 combining marks always
// "disagreed": the aligner stuck, hold-back released nothing more until the
// response ended, and a later flag cut at the start of the run, withholding
// text already judged safe.
func TestAlignerZalgo(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	fed := "Hi Z" + strings.Repeat("\u0301\u0316", 20) + " and then plenty of ordinary text."
	a := newAligner()
	a.addDecoded(tok.Decode(tok.EncodeText(fed), false))
	a.sync([]byte(fed), true)
	if a.stuck {
		t.Errorf("aligner stuck on text whose tokens decode to its (exact) NFC form")
	}
	if got := a.fedOffset(len(a.dec)); got != len(fed) {
		t.Errorf("all judged tokens cover %d of %d fed bytes", got, len(fed))
	}
}

// TestAlignerMidRuneDifference: U+2000 (EN QUAD, E2 80 80) is
// U+2002 (E2 80 82) in NFC, so fed and decoded text agree on two bytes of
// the rune before they differ: the segment starts at the rune's start (from
// its last byte, the aligner stuck, and hold-back released nothing more of
// the answer until it ended). Hindi's precomposed nukta letters too.
func TestAlignerMidRuneDifference(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	for _, fed := range []string{"Hello\u2000world, and plenty of ordinary text.", "caf\u00e9\u2000x and more", "x\u2126y more", "\u092f\u0939 \u095e\u093f\u0932\u094d\u092e \u091c\u093c\u0930\u0942\u0930 \u0926\u0947\u0916\u094b, it is good"} {
		a := newAligner()
		a.addDecoded(tok.Decode(tok.EncodeText(fed), false))
		a.sync([]byte(fed), true)
		if a.stuck {
			t.Errorf("%+q: aligner stuck on text whose tokens decode to its NFC form", fed)
		}
		if got := a.fedOffset(len(a.dec)); got != len(fed) {
			t.Errorf("%+q: all judged tokens cover %d of %d fed bytes", fed, got, len(fed))
		}
	}
}
