package tokenizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	lens := make([]int, n)
	size := 0
	start := r.at
	for id := range lens {
		l := r.u16()
		lens[id] = l
		if l != noToken {
			r.next(l)
			size += l
		}
	}
	if r.err != nil {
		return nil, errors.New("tokenizer tables: truncated")
	}
	// One string holds every token; each token is a substring of it.
	all := make([]byte, 0, size)
	r2 := tableReader{b: b, at: start}
	for range lens {
		if l := r2.u16(); l != noToken {
			all = append(all, r2.next(l)...)
		}
	}
	text := string(all)
	vocab := make(map[string]int, n)
	off := 0
	for id, l := range lens {
		if l == noToken {
			continue
		}
		vocab[text[off:off+l]] = id
		off += l
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
		if err := t.setVocab(vocab); err != nil {
			return err
		}
		if len(vocab) != n-countAbsent(lens) {
			return errors.New("tokenizer tables: a token repeats")
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

func countAbsent(lens []int) int {
	n := 0
	for _, l := range lens {
		if l == noToken {
			n++
		}
	}
	return n
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
