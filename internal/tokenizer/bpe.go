package tokenizer

// bpe appends the ids of one pre-token (raw bytes) to out: start from one
// symbol per byte and repeatedly apply the lowest-ranked merge, leftmost
// first among equal ranks, until none applies.
func (t *Tokenizer) bpe(piece string, out []int) []int {
	if len(piece) > 48 {
		return t.bpeLong(piece, out)
	}
	var buf [48]int32
	syms := buf[:len(piece)]
	for i := 0; i < len(piece); i++ {
		syms[i] = t.byteID[piece[i]]
	}
	for len(syms) > 1 {
		best, bestRank, bestID := -1, uint64(1<<32), int32(0)
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := t.merges[uint64(syms[i])<<32|uint64(uint32(syms[i+1]))]; ok && m>>32 < bestRank {
				best, bestRank, bestID = i, m>>32, int32(uint32(m))
			}
		}
		if best < 0 {
			break
		}
		syms[best] = bestID
		syms = append(syms[:best+1], syms[best+2:]...)
	}
	for _, s := range syms {
		out = append(out, int(s))
	}
	return out
}

// bpeLong is bpe for long pre-tokens (runs of CJK, symbols or letters), in
// O(n log n) with a heap of candidate merges over a linked list of symbols.
func (t *Tokenizer) bpeLong(piece string, out []int) []int {
	n := len(piece)
	buf := make([]int32, 3*n)
	id, next, prev := buf[:n], buf[n:2*n], buf[2*n:]
	for i := 0; i < n; i++ {
		id[i] = t.byteID[piece[i]]
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
	}
	next[n-1] = -1
	h := mergeHeap(make([]mergeCand, 0, n))
	push := func(l int32) {
		if l < 0 || next[l] < 0 {
			return
		}
		r := next[l]
		if m, ok := t.merges[uint64(id[l])<<32|uint64(uint32(id[r]))]; ok {
			h.push(mergeCand{rank: uint32(m >> 32), pos: l, left: id[l], right: id[r], merged: int32(uint32(m))})
		}
	}
	for i := int32(0); i+1 < int32(n); i++ {
		push(i)
	}
	for len(h) > 0 {
		c := h.pop()
		r := next[c.pos]
		// Skip candidates made stale by earlier merges.
		if id[c.pos] != c.left || r < 0 || id[r] != c.right {
			continue
		}
		id[c.pos] = c.merged
		id[r] = -1
		next[c.pos] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = c.pos
		}
		if prev[c.pos] >= 0 {
			push(prev[c.pos])
		}
		push(c.pos)
	}
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, int(id[i]))
	}
	return out
}

type mergeCand struct {
	rank        uint32
	pos         int32
	left, right int32
	merged      int32
}

// mergeHeap is a binary min-heap by (rank, pos): the lowest rank merges
// first, and among equal ranks the leftmost.
type mergeHeap []mergeCand

func (a mergeCand) less(b mergeCand) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos)
}

func (h *mergeHeap) push(c mergeCand) {
	s := append(*h, c)
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].less(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
	*h = s
}

func (h *mergeHeap) pop() mergeCand {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(s) && s[l].less(s[m]) {
			m = l
		}
		if r := l + 1; r < len(s) && s[r].less(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
