package tokenizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// The stock Qwen3 tokenizer is also embedded as tables: its vocabulary in
// id order and its merges already resolved to ids, beside the rest of its
// tokenizer.json. Building a tokenizer from them skips parsing some
// 300,000 JSON strings and looking each merge up three times, most of
// what a load costs. TestQwen3Tables checks that they are what the
// embedded tokenizer.json gives, and regenerates them with -update.
//
// Layout, little-endian: the magic; the SHA-256 of the tokenizer.json
// they come from; the length of the rest of the document and its bytes
// (the tokenizer.json with an empty vocab and merges); the number of ids,
// then per id a uint16 length and the token's bytes (0xFFFF: no token); the
// number of merges, then per merge in rank order the ids of its two parts
// and of their concatenation, as uint32s.
const tablesMagic = "SGTOK\x00\x01\x00"

const noToken = 0xFFFF

// encodeTables lays out the tables of the tokenizer.json whose SHA-256 is
// sum, from its split form.
func encodeTables(sum [32]byte, rest []byte, tb *tables) ([]byte, error) {
	maxID := -1
	for _, id := range tb.vocab {
		maxID = max(maxID, id)
	}
	tokens := make([]*string, maxID+1)
	for tok, id := range tb.vocab {
		if len(tok) >= noToken {
			return nil, fmt.Errorf("token %d is %d bytes long", id, len(tok))
		}
		tokens[id] = &tok
	}
	var b bytes.Buffer
	b.WriteString(tablesMagic)
	b.Write(sum[:])
	u32 := func(v int) { b.Write(binary.LittleEndian.AppendUint32(nil, uint32(v))) }
	u32(len(rest))
	b.Write(rest)
	u32(len(tokens))
	for _, tok := range tokens {
		if tok == nil {
			b.Write(binary.LittleEndian.AppendUint16(nil, noToken))
			continue
		}
		b.Write(binary.LittleEndian.AppendUint16(nil, uint16(len(*tok))))
		b.WriteString(*tok)
	}
	u32(len(tb.merges))
	for rank, mg := range tb.merges {
		left, ok1 := tb.vocab[mg[0]]
		right, ok2 := tb.vocab[mg[1]]
		merged, ok3 := tb.vocab[mg[0]+mg[1]]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("merge %d %q %q uses a token missing from the vocab", rank, mg[0], mg[1])
		}
		u32(left)
		u32(right)
		u32(merged)
	}
	return b.Bytes(), nil
}

// fromTables builds the tokenizer that tables (encodeTables' output)
// describe, checking it as FromJSON checks a document, and that it comes
// from the tokenizer.json whose SHA-256 is want.
func fromTables(b []byte, want [32]byte) (*Tokenizer, error) {
	r := tableReader{b: b}
	if string(r.next(len(tablesMagic))) != tablesMagic {
		return nil, errors.New("tokenizer tables: bad magic")
	}
	if sum := r.next(32); !bytes.Equal(sum, want[:]) {
		return nil, errors.New("tokenizer tables: made from another tokenizer.json")
	}
	rest := r.next(r.u32())
	n := r.u32()
	if r.err != nil || n > (len(b)-r.at)/2 {
		return nil, errors.New("tokenizer tables: truncated")
	}
	// Every token views its bytes in b, which no one writes (the
	// embedded tables): nothing is copied. Room is left for the added
	// tokens that follow the vocabulary.
	idToken, present := make([]string, n, n+1<<10), make([]bool, n, n+1<<10)
	count, start := 0, r.at
	for id := range n {
		l := r.u16()
		if l == noToken {
			continue
		}
		tok := r.next(l)
		idToken[id] = unsafe.String(unsafe.SliceData(tok), len(tok))
		present[id] = true
		count++
	}
	if r.err != nil {
		return nil, errors.New("tokenizer tables: truncated")
	}
	m := r.u32()
	if r.err != nil || m > (len(b)-r.at)/12 {
		return nil, errors.New("tokenizer tables: truncated")
	}
	merges := r.next(12 * m)
	return build(rest, func(t *Tokenizer, mj *modelJSON) error {
		if err := t.checkModel(mj); err != nil {
			return err
		}
		// The map, when it is built, is read from the tables again:
		// added tokens may have written to idToken since.
		vocab := func() map[string]int {
			m, r := make(map[string]int, count), tableReader{b: b, at: start}
			for id := range n {
				if l := r.u16(); l != noToken {
					tok := r.next(l)
					m[unsafe.String(unsafe.SliceData(tok), len(tok))] = id
				}
			}
			return m
		}
		if err := t.setTableVocab(idToken, present, count, vocab); err != nil {
			return err
		}
		t.merges = make(map[uint64]uint64, m)
		for rank := range m {
			e := merges[12*rank:]
			left := int(binary.LittleEndian.Uint32(e))
			right := int(binary.LittleEndian.Uint32(e[4:]))
			merged := int(binary.LittleEndian.Uint32(e[8:]))
			for _, id := range []int{left, right, merged} {
				if id >= len(t.present) || !t.present[id] {
					return fmt.Errorf("tokenizer tables: merge %d uses id %d, not in the vocab", rank, id)
				}
			}
			if err := t.addMerge(rank, left, right, merged); err != nil {
				return err
			}
		}
		return nil
	})
}

// tableReader reads the tables' fields in order, remembering the first
// overrun.
type tableReader struct {
	b   []byte
	at  int
	err error
}

func (r *tableReader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.at {
		r.err = errors.New("truncated")
		return nil
	}
	r.at += n
	return r.b[r.at-n : r.at]
}

func (r *tableReader) u32() int {
	if b := r.next(4); b != nil {
		return int(binary.LittleEndian.Uint32(b))
	}
	return 0
}

func (r *tableReader) u16() int {
	if b := r.next(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

// setTableVocab is setVocab for a vocabulary in id order (the tables): ids
// are in range by construction, and the tokens' map, which encoding the
// stock tokenizer never needs, is built by vocab on first use (vocabMap);
// the byte-level symbols' ids are found among the one- and two-byte tokens.
// That no token repeats is TestQwen3Tables' to check, over the only tables
// there are.
func (t *Tokenizer) setTableVocab(idToken []string, present []bool, count int, vocab func() map[string]int) error {
	t.idToken, t.present, t.vocabLen, t.vocabLazy = idToken, present, count, vocab
	var seen [256]bool
	for id, tok := range idToken {
		if !present[id] || len(tok) > 2 {
			continue
		}
		r, size := utf8.DecodeRuneInString(tok)
		if size != len(tok) || int(r) >= len(runeToByte) || runeToByte[r] < 0 {
			continue
		}
		b := runeToByte[r]
		if seen[b] {
			return fmt.Errorf("tokenizer tables: the byte-level symbol %q repeats", tok)
		}
		seen[b], t.byteID[b] = true, int32(id)
	}
	for b, ok := range seen {
		if !ok {
			return errNoByteSymbol(b)
		}
	}
	return nil
}
