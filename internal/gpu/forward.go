package gpu

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/paging"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// Cache is one stream's positions in the model's paged KV cache.
type Cache struct {
	m     *Model
	table *paging.Table
}

// NewCache starts an empty stream; it holds no memory until tokens arrive.
func (m *Model) NewCache() *Cache { return &Cache{m: m, table: m.pool.NewTable()} }

// Len is the number of positions filled.
func (c *Cache) Len() int { return c.table.Len() }

// Bytes is the cache memory the stream holds (its blocks).
func (c *Cache) Bytes() int64 {
	return int64(len(c.table.Blocks())) * int64(c.m.pool.BlockSize) * c.m.BytesPerPosition()
}

// Release returns the stream's blocks to the pool.
func (c *Cache) Release() { c.table.Release() }

// Sequence is one stream's new tokens in a batch.
type Sequence struct {
	Cache *Cache
	IDs   []int
}

// workspace is the device memory one forward of up to cap tokens uses.
type workspace struct {
	cap                                   int
	h, xn, o, q, k, v, att, gate, up, pre *cuda.Buffer // gate: [cap][2·inter], for the fused gate|up
	qkv, logits                           *cuda.Buffer // qkv: the fused q|k|v product
	meta                                  *cuda.Buffer // int32: see metaPtrs
	metaCap                               int          // int32 values
	states                                *cuda.Buffer // the attention's chunk states (attn.cuh)
	statesCap                             int          // token-chunks
}

func (w *workspace) bufs() []*cuda.Buffer {
	return []*cuda.Buffer{w.h, w.xn, w.o, w.q, w.k, w.v, w.att, w.gate, w.up, w.pre, w.qkv, w.logits, w.meta, w.states}
}

// metaPtrs are the device addresses of a forward's int32 metadata, laid
// out at offsets that depend on T alone (so that a graph of T tokens reads
// any later step's): ids, positions, cache slots, block-table offsets
// ([T] each), attention tiles ([2T]), chunk-state offsets ([T]), then the
// block tables.
type metaPtrs struct{ ids, pos, slots, toff, tiles, soff, tables uint64 }

// workspaceFor returns a workspace for T tokens, meta int32 values and
// states attention chunk states, growing the current one (a power of two
// in tokens, doubling the rest) when too small.
func (m *Model) workspaceFor(T, meta, states int) (*workspace, error) {
	if w := m.ws; w != nil && w.cap >= T && w.metaCap >= meta && w.statesCap >= states {
		return w, nil
	}
	n := 16
	for n < T {
		n *= 2
	}
	states = max(states, 2*n)
	if m.ws != nil {
		n = max(n, m.ws.cap)
		// Block tables and chunk states grow with the streams: double,
		// so that the buffers (and the graphs that read them) are rarely
		// replaced.
		if meta > m.ws.metaCap {
			meta = max(meta, 2*m.ws.metaCap)
		}
		meta = max(meta, m.ws.metaCap)
		if states > m.ws.statesCap {
			states = max(states, 2*m.ws.statesCap)
		}
		states = max(states, m.ws.statesCap)
		// The graphs read the old buffers: drop them first.
		if err := m.graphs.reset(); err != nil {
			return nil, err
		}
		for _, b := range m.ws.bufs() {
			b.Free()
		}
		m.ws = nil
	}
	meta = max(meta, 1024)
	qd, kvd := m.Heads*m.HeadDim, m.KVHeads*m.HeadDim
	inner := max(m.heads[0].inner, m.heads[1].inner)
	_, logits := m.logitPieces(n) // the most any T ≤ n spans
	w := &workspace{cap: n, metaCap: meta, statesCap: states}
	sizes := []struct {
		dst   **cuda.Buffer
		elems int
	}{
		{&w.h, n * m.Hidden}, {&w.xn, n * m.Hidden}, {&w.o, n * m.Hidden},
		{&w.q, n * qd}, {&w.k, n * kvd}, {&w.v, n * kvd}, {&w.att, n * qd},
		{&w.gate, 2 * n * m.Inter}, {&w.up, n * m.Inter}, {&w.pre, n * inner}, {&w.qkv, n * (qd + 2*kvd)},
		{&w.logits, logits}, {&w.meta, meta}, {&w.states, states * m.Heads * attnState},
	}
	for _, s := range sizes {
		b, err := m.ctx.Alloc(int64(s.elems) * 4)
		if err != nil {
			for _, b := range w.bufs() {
				b.Free()
			}
			return nil, fmt.Errorf("gpu: workspace for %d tokens: %w", n, err)
		}
		*s.dst = b
	}
	m.ws = w
	return w, nil
}

// Forward runs the new tokens of all seqs through the network in one
// batch, appends their keys and values to each stream's cache, and returns
// each token's head logits, as qwen3.Model.Forward does on the CPU. It is
// not safe for concurrent use: one scheduler calls it.
func (m *Model) Forward(seqs []Sequence) ([]qwen3.Output, error) { return m.forward(seqs, false) }

// ForwardHidden is Forward that also returns each token's final normed
// hidden state (qwen3.ForwardOptions.Hidden), copied back from the GPU.
func (m *Model) ForwardHidden(seqs []Sequence) ([]qwen3.Output, error) { return m.forward(seqs, true) }

func (m *Model) forward(seqs []Sequence, hidden bool) ([]qwen3.Output, error) {
	T := 0
	seen := map[*Cache]bool{}
	for i, s := range seqs {
		switch {
		case s.Cache == nil || s.Cache.m != m:
			return nil, fmt.Errorf("sequence %d: no cache of this model", i)
		case seen[s.Cache]:
			return nil, fmt.Errorf("sequence %d: cache appears twice in one batch", i)
		}
		seen[s.Cache] = true
		if err := qwen3.CheckTokens(i, s.Cache.Len(), s.IDs, m.MaxPositions, m.Vocab); err != nil {
			return nil, err
		}
		T += len(s.IDs)
	}
	if T == 0 {
		return make([]qwen3.Output, len(seqs)), nil
	}
	// Take the cache blocks first: all or nothing.
	for i, s := range seqs {
		if err := s.Cache.table.Grow(len(s.IDs)); err != nil {
			m.undo(seqs[:i])
			return nil, err
		}
	}
	// Host-side metadata: ids, positions, slots, table offsets, tables.
	ids := make([]int32, 0, T)
	pos := make([]int32, 0, T)
	slots := make([]int32, 0, T)
	toff := make([]int32, 0, T)
	var tables []int32
	for _, s := range seqs {
		start := s.Cache.Len() - len(s.IDs)
		off := int32(len(tables))
		tables = append(tables, s.Cache.table.Blocks()...)
		for j, id := range s.IDs {
			p := start + j
			ids = append(ids, int32(id))
			pos = append(pos, int32(p))
			slots = append(slots, s.Cache.table.Slot(p))
			toff = append(toff, off)
		}
	}
	lens := make([]int, len(seqs))
	for i, s := range seqs {
		lens[i] = len(s.IDs)
	}
	tiles, soff, states := attnLayout(lens, pos)
	meta := make([]int32, 0, 7*T+len(tables))
	for _, part := range [][]int32{ids, pos, slots, toff, tiles, soff, tables} {
		meta = append(meta, part...)
	}
	w, err := m.workspaceFor(T, len(meta), states)
	if err != nil {
		m.undo(seqs)
		return nil, err
	}
	if err := cuda.CopyInOn(m.stream, w.meta, 0, meta); err != nil {
		m.undo(seqs)
		return nil, err
	}
	at := func(i int) uint64 { return w.meta.Offset(int64(i) * 4) }
	mp := metaPtrs{ids: at(0), pos: at(T), slots: at(2 * T), toff: at(3 * T), tiles: at(4 * T), soff: at(6 * T), tables: at(7 * T)}

	logits, err := m.run(w, T, mp)
	var hs []float32
	if err == nil && hidden {
		// The final norm wrote h in place; nothing after it does.
		hs = make([]float32, T*m.Hidden)
		err = cuda.CopyOutOn(m.stream, hs, w.h, 0)
	}
	if err != nil {
		m.undo(seqs)
		return nil, err
	}
	pieces, _ := m.logitPieces(T)
	var heads [4][]float32
	for i, p := range pieces {
		heads[i] = logits[p.off : p.off+int64(T*p.cols)]
	}
	return qwen3.SplitOutputs(lens, heads, hs, m.Hidden), nil
}

// undo gives back the positions a failed forward took.
func (m *Model) undo(seqs []Sequence) {
	for _, s := range seqs {
		s.Cache.table.Truncate(s.Cache.Len() - len(s.IDs))
	}
}

const threads = 256

func blocks(n int) uint32 { return uint32((n + threads - 1) / threads) }

// normBlock is the block of the kernels that normalise rows of width d
// (rmsnorm, qk_prep): whole warps, up to 1024 threads.
func normBlock(d int) cuda.Dim3 { return cuda.Dim3{X: uint32(min(1024, max(32, (d+31)/32*32)))} }

// run queues the whole forward on the model's stream — replaying the graph
// recorded for T tokens, recording one, or launching each kernel — and
// copies the logits back.
func (m *Model) run(w *workspace, T int, mp metaPtrs) ([]float32, error) {
	direct := func() error { return m.stream.Do(func() error { return m.queue(w, T, mp) }) }
	var err error
	if m.direct {
		err = direct()
	} else if g, ok, record := m.graphs.plan(T); ok {
		err = g.Launch(m.stream)
		m.stats.Replayed++
	} else if record {
		g, cerr := m.stream.Capture(func() error { return m.queue(w, T, mp) })
		if cerr != nil {
			// Launch directly from now on, and say why.
			m.stats.Err = cerr.Error()
			m.graphs.reset()
			m.graphs = nil
			err = direct()
		} else {
			m.stats.Recorded++
			m.stats.Nodes = g.Nodes
			if err = m.graphs.add(T, g); err == nil {
				err = g.Launch(m.stream)
				m.stats.Replayed++
			}
		}
	} else {
		err = direct()
	}
	if err != nil {
		return nil, err
	}
	// Each head wrote its risk then its category logits as [T][cols]
	// blocks (logitPieces).
	_, size := m.logitPieces(T)
	flat := make([]float32, size)
	if err := cuda.CopyOutOn(m.stream, flat, w.logits, 0); err != nil {
		return nil, err
	}
	return flat, nil
}

// piece is one head output's block of the logits buffer: [T][cols] values
// from float offset off.
type piece struct {
	off  int64
	cols int
}

// logitPieces lays the heads' outputs of T tokens out in the logits buffer:
// each head's risk then category logits, response head first, each block
// starting at a multiple of 4 floats — a head product on the tensor cores
// stores pairs of floats, which a GPU requires 8-byte aligned, and an odd
// T times an odd class count would otherwise leave the next block 4 bytes
// off. It returns the blocks and the floats they span.
func (m *Model) logitPieces(T int) ([]piece, int) {
	var ps []piece
	off := int64(0)
	for _, hd := range m.heads {
		for _, cols := range []int{hd.levels, hd.categories} {
			ps = append(ps, piece{off, cols})
			off += (int64(T*cols) + 3) &^ 3
		}
	}
	return ps, int(off)
}

// queue queues every kernel of the forward of T tokens on the model's
// stream: qwen3.RunStep over the GPU's operations (ops.go). Its launches
// depend on T and the workspace only (the rest is read from device
// memory), which is what lets a graph replay them.
func (m *Model) queue(w *workspace, T int, mp metaPtrs) error {
	ops := m.newGPUOps(w, T, mp)
	qwen3.RunStep(ops, len(m.layers))
	return ops.err
}
