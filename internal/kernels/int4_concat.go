package kernels

import "fmt"

// ConcatInt4 stacks matrices that share K and the group size along their
// outputs into one matrix, and returns views of the parts inside it. A
// projection that reads the same input as others (q, k and v; gate and up)
// then runs as one product: the input is quantized once and the threads
// meet once, while each output is computed exactly as before (outputs never
// mix). The views share the stacked storage, so keeping them costs nothing.
// Every part but the last needs N a multiple of 16, the block width.
// Parts repacked together by RepackAWQStacked, in order, are joined in
// place: the views returned are then the parts themselves, and nothing is
// copied.
func ConcatInt4(ms ...*Int4Matrix) (*Int4Matrix, []*Int4Matrix, error) {
	if len(ms) == 0 {
		return nil, nil, fmt.Errorf("kernels: ConcatInt4 of no matrices")
	}
	K, group, coarse := ms[0].K, ms[0].Group, ms[0].Coarse
	var N, blocks, qlen, mlen int
	for i, m := range ms {
		if m.K != K || m.Group != group || m.Coarse != coarse {
			return nil, nil, fmt.Errorf("kernels: ConcatInt4: matrix %d is %d inputs in groups of %d (coarse %v), want %d in groups of %d (coarse %v)", i, m.K, m.Group, m.Coarse, K, group, coarse)
		}
		if i < len(ms)-1 && m.N%int4Block != 0 {
			return nil, nil, fmt.Errorf("kernels: ConcatInt4: matrix %d has %d outputs, not a multiple of %d", i, m.N, int4Block)
		}
		N += m.N
		blocks += m.blocks
		qlen += len(m.qs)
		mlen += len(m.meta)
	}
	if joined := joinStacked(ms, N, blocks); joined != nil {
		return joined, ms, nil
	}
	out := &Int4Matrix{K: K, N: N, Group: group, Coarse: coarse, blocks: blocks, groups: ms[0].groups,
		qs: make([]byte, 0, qlen), meta: make([]byte, 0, mlen)}
	views := make([]*Int4Matrix, len(ms))
	for i, m := range ms {
		q0, m0 := len(out.qs), len(out.meta)
		out.qs = append(out.qs, m.qs...)
		out.meta = append(out.meta, m.meta...)
		views[i] = &Int4Matrix{K: K, N: m.N, Group: group, Coarse: coarse, blocks: m.blocks, groups: m.groups,
			qs: out.qs[q0:len(out.qs):len(out.qs)], meta: out.meta[m0:len(out.meta):len(out.meta)]}
	}
	return out, views, nil
}

// joinStacked is the stacked matrix over ms when they lie next to each
// other, in order, in one RepackAWQStacked allocation (then the parts are
// already views of it), else nil.
func joinStacked(ms []*Int4Matrix, N, blocks int) *Int4Matrix {
	st := ms[0].stack
	if st == nil {
		return nil
	}
	for i, m := range ms {
		if m.stack != st {
			return nil
		}
		if i > 0 && (m.qsOff != ms[i-1].qsOff+len(ms[i-1].qs) || m.metaOff != ms[i-1].metaOff+len(ms[i-1].meta)) {
			return nil
		}
	}
	first, last := ms[0], ms[len(ms)-1]
	qEnd, mEnd := last.qsOff+len(last.qs), last.metaOff+len(last.meta)
	return &Int4Matrix{K: first.K, N: N, Group: first.Group, Coarse: first.Coarse, blocks: blocks, groups: first.groups,
		qs: st.qs[first.qsOff:qEnd:qEnd], meta: st.meta[first.metaOff:mEnd:mEnd],
		stack: st, qsOff: first.qsOff, metaOff: first.metaOff}
}
