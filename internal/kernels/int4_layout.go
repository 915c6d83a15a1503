package kernels

import "fmt"

// Int4Layout names the byte layout of an Int4Matrix's codes and records
// (see Int4Matrix). A copy of the bytes kept outside the process (the
// repacked-weights file a model load writes) records it and is rebuilt when
// it differs, so it must change whenever either layout does.
const Int4Layout = "int4 tiles 16x8 nibble-pairs, meta 48 (16 f16 scales, 16 zeros), v1"

// Layout returns the matrix's codes and records as they lie in memory: the
// bytes Int4FromLayout takes back. They are read-only views.
func (m *Int4Matrix) Layout() (qs, meta []byte) { return m.qs, m.meta }

// Int4LayoutSizes is the length of the codes and of the records of a
// matrix with K inputs, N outputs and groups of group inputs, or an error
// when those dimensions are not ones RepackAWQ accepts.
func Int4LayoutSizes(K, N, group int) (qs, meta int, err error) {
	if K <= 0 || N <= 0 || N%8 != 0 || group <= 0 || group%8 != 0 || K%group != 0 {
		return 0, 0, fmt.Errorf("kernels: no int4 layout for %d inputs, %d outputs, groups of %d", K, N, group)
	}
	blocks := (N + int4Block - 1) / int4Block
	// Compare against overflow before multiplying: the sizes may come
	// from a file.
	const limit = 1 << 40
	if K > limit/8/blocks || K/group > limit/int4Meta/blocks {
		return 0, 0, fmt.Errorf("kernels: int4 layout of %d×%d is too large", K, N)
	}
	qs, meta = int4Bytes(blocks, K, K/group)
	return qs, meta, nil
}

// int4Bytes is the length of the codes (8 bytes per input per block of 16
// outputs) and of the records (one per block and group) of a matrix.
func int4Bytes(blocks, K, groups int) (qs, meta int) {
	return blocks * K * 8, blocks * groups * int4Meta
}

// Int4FromLayout rebuilds matrices that share K and the group size from
// their codes and records (what Layout returned for each, concatenated in
// the order of Ns, the matrices' outputs). The bytes are used in place, not
// copied, and must stay valid and unchanged while the matrices are in use;
// like RepackAWQStacked's results, neighbours join in ConcatInt4 without
// copying. Any byte values give a usable matrix: only the lengths are
// checked.
func Int4FromLayout(K, group int, Ns []int, qs, meta []byte) ([]*Int4Matrix, error) {
	if len(Ns) == 0 {
		return nil, fmt.Errorf("kernels: Int4FromLayout of no matrices")
	}
	ms := make([]*Int4Matrix, len(Ns))
	var qlen, mlen int
	for i, N := range Ns {
		qn, mn, err := Int4LayoutSizes(K, N, group)
		if err != nil {
			return nil, err
		}
		if qn > len(qs)-qlen || mn > len(meta)-mlen {
			return nil, fmt.Errorf("kernels: int4 layout of %d matrices: %d code and %d record bytes are too few", len(Ns), len(qs), len(meta))
		}
		ms[i] = &Int4Matrix{K: K, N: N, Group: group, blocks: (N + int4Block - 1) / int4Block, groups: K / group, qsOff: qlen, metaOff: mlen}
		qlen += qn
		mlen += mn
	}
	if qlen != len(qs) || mlen != len(meta) {
		return nil, fmt.Errorf("kernels: int4 layout of %d matrices has %d code and %d record bytes, want %d and %d", len(Ns), len(qs), len(meta), qlen, mlen)
	}
	(&int4Stack{qs: qs, meta: meta}).place(ms)
	if len(ms) == 1 {
		ms[0].stack = nil // alone: nothing to join, as RepackAWQ leaves it
	}
	return ms, nil
}

// place makes ms, whose offsets into st are set, views of st's codes and
// records.
func (st *int4Stack) place(ms []*Int4Matrix) {
	for _, m := range ms {
		qn, mn := int4Bytes(m.blocks, m.K, m.groups)
		m.stack = st
		m.qs = st.qs[m.qsOff : m.qsOff+qn : m.qsOff+qn]
		m.meta = st.meta[m.metaOff : m.metaOff+mn : m.metaOff+mn]
	}
}
