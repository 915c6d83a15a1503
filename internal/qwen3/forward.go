package qwen3

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/kernels"
)

// Sequence is one sequence's part of a batched forward: its cache and the
// ids of its new tokens, which take positions Cache.Len() onwards.
type Sequence struct {
	Cache *Cache
	IDs   []int
}

// Output holds, for each new token of one sequence, its four logit vectors
// and, when requested, its final normed hidden state.
type Output struct {
	Risk          [][]float32 // response risk level
	Category      [][]float32 // response category
	QueryRisk     [][]float32 // query (prompt) risk level
	QueryCategory [][]float32 // query category
	Hidden        [][]float32 // nil unless ForwardOptions.Hidden
}

// ForwardOptions select optional outputs.
type ForwardOptions struct {
	Hidden bool // return the final normed hidden states
}

// row is one token of a batch: the cache it belongs to and its position.
type row struct {
	cache *Cache
	pos   int
}

// batch is the state one Forward shares with the layers.
type batch struct {
	T      int
	ids    []int // row t's token
	rows   []row
	maxPos int // largest position in the batch
	rope   *RoPE
	ws     *workspace
}

// Forward runs the new tokens of every sequence through the model in one
// pass and appends their keys and values to the caches. All new tokens are
// packed into one [T][hidden] activation, so each weight matrix is read once
// per call whatever the number of sequences.
//
// Inputs are checked before any work: a nil, foreign or duplicated cache,
// an id outside the vocabulary or a sequence that would exceed
// MaxPositions is an error and no cache changes.
func (m *Model) Forward(seqs []Sequence, opts ForwardOptions) ([]Output, error) {
	if m.uploadOnly {
		return nil, errUploadOnly
	}
	T := 0
	seen := make(map[*Cache]bool, len(seqs))
	vocab := m.Embed.Rows()
	for i, s := range seqs {
		c := s.Cache
		switch {
		case c == nil:
			return nil, fmt.Errorf("sequence %d: nil cache", i)
		case c.owner != m:
			return nil, fmt.Errorf("sequence %d: cache belongs to another model", i)
		case seen[c]:
			return nil, fmt.Errorf("sequence %d: cache appears twice in one batch", i)
		}
		seen[c] = true
		if err := CheckTokens(i, c.n, s.IDs, m.MaxPositions, vocab); err != nil {
			return nil, err
		}
		T += len(s.IDs)
	}
	for _, s := range seqs {
		if err := s.Cache.Reserve(s.Cache.n + len(s.IDs)); err != nil {
			return nil, err
		}
	}
	if T == 0 {
		return make([]Output, len(seqs)), nil
	}

	ws := m.getWorkspace(T)
	defer m.pool.Put(ws)
	b := &batch{T: T, ids: ws.ids[:0], rows: ws.rows[:0], rope: m.RoPE, ws: ws}
	for _, s := range seqs {
		for j, id := range s.IDs {
			pos := s.Cache.n + j
			b.ids = append(b.ids, id)
			b.rows = append(b.rows, row{cache: s.Cache, pos: pos})
			b.maxPos = max(b.maxPos, pos)
		}
	}
	H := m.hidden
	h := ws.h[:T*H]
	ops := m.newCPUOps(b, h)
	RunStep(ops, len(m.Layers))
	var hidden []float32
	if opts.Hidden {
		hidden = h
	}
	lens := make([]int, len(seqs))
	for i, s := range seqs {
		lens[i] = len(s.IDs)
		s.Cache.n += len(s.IDs)
	}
	return SplitOutputs(lens, ops.logits, hidden, H), nil
}

// SplitOutputs copies a step's results out per sequence, into one
// allocation (a backend's buffers are reused): the sequences' new tokens
// are lens[i] consecutive rows of logits[j], [T][classes] for
// LogitTensors[j], and of hidden [T][h] (nil: no hidden states).
func SplitOutputs(lens []int, logits [4][]float32, hidden []float32, h int) []Output {
	T, width := 0, 0
	for _, n := range lens {
		T += n
	}
	if T == 0 {
		return make([]Output, len(lens))
	}
	var cols [4]int
	for j, l := range logits {
		cols[j] = len(l) / T
		width += cols[j]
	}
	if hidden != nil {
		width += h
	}
	flat := make([]float32, T*width)
	take := func(src []float32, t, w int) []float32 {
		d := flat[:w:w]
		flat = flat[w:]
		copy(d, src[t*w:(t+1)*w])
		return d
	}
	outs := make([]Output, len(lens))
	t := 0
	for i, n := range lens {
		o := Output{
			Risk: make([][]float32, n), Category: make([][]float32, n),
			QueryRisk: make([][]float32, n), QueryCategory: make([][]float32, n),
		}
		heads := [4][][]float32{o.Risk, o.Category, o.QueryRisk, o.QueryCategory}
		if hidden != nil {
			o.Hidden = make([][]float32, n)
		}
		for j := range n {
			for k, l := range logits {
				heads[k][j] = take(l, t, cols[k])
			}
			if hidden != nil {
				o.Hidden[j] = take(hidden, t, h)
			}
			t++
		}
		outs[i] = o
	}
	return outs
}

// CheckTokens is every backend's check of sequence i of a batch before
// any work: its cached positions plus its new ids fit maxPositions
// (max_position_embeddings), and every id is in the vocabulary.
func CheckTokens(i, cached int, ids []int, maxPositions, vocab int) error {
	if n := cached + len(ids); n > maxPositions {
		return fmt.Errorf("sequence %d: %d tokens (%d cached + %d new) exceed max_position_embeddings %d",
			i, n, cached, len(ids), maxPositions)
	}
	for j, id := range ids {
		if id < 0 || id >= vocab {
			return fmt.Errorf("sequence %d, token %d: id %d outside the vocabulary [0, %d)", i, j, id, vocab)
		}
	}
	return nil
}

// workspace is the scratch one Forward needs, pooled so that steady-state
// streaming allocates little.
type workspace struct {
	h, xn, o, q, k, v, att, gate, up, pre, out []float32
	qkv, gu                                    []float32 // fused projections' outputs
	ids                                        []int
	rows                                       []row
	scratch                                    [][]float32 // per attention worker: scores of a head group
	blockStarts                                []int       // attention blocks of the batch's rows
	attn                                       attnItems   // a layer's attention work (attention.go)
}

func (m *Model) getWorkspace(T int) *workspace {
	ws, _ := m.pool.Get().(*workspace)
	if ws == nil {
		ws = &workspace{}
	}
	fit := func(s *[]float32, n int) {
		if cap(*s) < n {
			*s = make([]float32, n)
		}
		*s = (*s)[:n]
	}
	R, Q := m.Response, m.Query
	fit(&ws.h, T*m.hidden)
	fit(&ws.xn, T*m.hidden)
	fit(&ws.o, T*m.hidden)
	split, stacked := false, false // some layer has separate q/k/v; some a stacked one
	for _, l := range m.Layers {
		split, stacked = split || l.Attn.QKV == nil, stacked || l.Attn.QKV != nil
	}
	if split {
		fit(&ws.q, T*m.qDim)
		fit(&ws.k, T*m.kvDim)
		fit(&ws.v, T*m.kvDim)
	}
	fit(&ws.att, T*m.qDim)
	fit(&ws.gate, T*m.inter)
	fit(&ws.up, T*m.inter)
	if stacked {
		fit(&ws.qkv, T*(m.qDim+2*m.kvDim))
	}
	if len(m.Layers) > 0 && m.Layers[0].MLP.GateUp != nil {
		fit(&ws.gu, 2*T*m.inter)
	}
	fit(&ws.pre, T*m.guardInner)
	fit(&ws.out, T*(R.Levels()+R.Categories()+Q.Levels()+Q.Categories()))
	if cap(ws.rows) < T {
		ws.rows = make([]row, 0, T)
	}
	if cap(ws.ids) < T {
		ws.ids = make([]int, 0, T)
	}
	// Attention scratch grows with the sequences seen (attention.go), not
	// with max_position_embeddings.
	for len(ws.scratch) < kernels.Threads() {
		ws.scratch = append(ws.scratch, nil)
	}
	return ws
}
