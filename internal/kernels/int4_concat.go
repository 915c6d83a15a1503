package kernels

import "fmt"

// ConcatInt4 stacks matrices that share K and the group size along their
// outputs into one matrix, and returns views of the parts inside it. A
// projection that reads the same input as others (q, k and v; gate and up)
// then runs as one product: the input is quantized once and the threads
// meet once, while each output is computed exactly as before (outputs never
// mix). The views share the stacked storage, so keeping them costs nothing.
// Every part but the last needs N a multiple of 16, the block width.
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
