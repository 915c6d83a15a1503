// Package paging lends fixed-size blocks of KV-cache positions to streams:
// a stream's cache is a block table (the ids of the blocks holding its
// positions 0..n-1 in order), so streams of any length share one pool
// without reserving each one's maximum. It knows nothing of where the
// blocks live (GPU memory, host memory): a backend maps block ids to
// addresses. Safe for concurrent use.
package paging

import (
	"errors"
	"fmt"
	"sync"
)

// ErrExhausted is wrapped by the error of a Grow that the pool cannot
// satisfy: the caller's memory budget is full (the server answers 429).
var ErrExhausted = errors.New("paging: no free KV-cache blocks")

// Pool is a fixed set of blocks of BlockSize positions each.
type Pool struct {
	BlockSize int
	mu        sync.Mutex
	free      []int32 // a stack: the most recently freed block is reused first
	total     int
}

// NewPool makes a pool of blocks blocks.
func NewPool(blocks, blockSize int) (*Pool, error) {
	if blocks <= 0 || blockSize <= 0 || blocks > 1<<30 {
		return nil, fmt.Errorf("paging: a pool of %d blocks of %d positions", blocks, blockSize)
	}
	p := &Pool{BlockSize: blockSize, free: make([]int32, blocks), total: blocks}
	for i := range p.free {
		p.free[i] = int32(blocks - 1 - i) // block 0 is handed out first
	}
	return p, nil
}

// Blocks is the pool's size; Free the number of blocks not lent.
func (p *Pool) Blocks() int { return p.total }

// Free is the number of blocks not lent.
func (p *Pool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// Table is one stream's block table.
type Table struct {
	pool   *Pool
	blocks []int32
	n      int // positions in use
}

// NewTable is an empty table drawing on p.
func (p *Pool) NewTable() *Table { return &Table{pool: p} }

// Len is the number of positions in use; Blocks the table itself (valid
// until the next Grow or Release).
func (t *Table) Len() int { return t.n }

// Blocks is the table: block ids for positions 0, BlockSize, 2·BlockSize, ...
func (t *Table) Blocks() []int32 { return t.blocks }

// Slot is the pool-wide index of position pos: block·BlockSize + offset.
func (t *Table) Slot(pos int) int32 {
	bs := t.pool.BlockSize
	return t.blocks[pos/bs]*int32(bs) + int32(pos%bs)
}

// Grow makes room for n more positions, taking blocks from the pool. It
// takes all it needs or nothing.
func (t *Table) Grow(n int) error {
	if n < 0 {
		return fmt.Errorf("paging: grow by %d", n)
	}
	bs := t.pool.BlockSize
	need := (t.n+n+bs-1)/bs - len(t.blocks)
	if need > 0 {
		p := t.pool
		p.mu.Lock()
		if need > len(p.free) {
			free := len(p.free)
			p.mu.Unlock()
			return fmt.Errorf("%w: %d positions need %d more blocks, %d of %d are free", ErrExhausted, n, need, free, p.total)
		}
		got := p.free[len(p.free)-need:]
		for i := len(got) - 1; i >= 0; i-- {
			t.blocks = append(t.blocks, got[i])
		}
		p.free = p.free[:len(p.free)-need]
		p.mu.Unlock()
	}
	t.n += n
	return nil
}

// Truncate forgets the positions from n on, returning the blocks no
// longer needed.
func (t *Table) Truncate(n int) {
	if n < 0 || n >= t.n {
		return
	}
	t.n = n
	bs := t.pool.BlockSize
	keep := (n + bs - 1) / bs
	t.giveBack(t.blocks[keep:])
	t.blocks = t.blocks[:keep]
}

// Release returns every block; the table is empty and usable again.
func (t *Table) Release() {
	t.giveBack(t.blocks)
	t.blocks, t.n = nil, 0
}

func (t *Table) giveBack(bs []int32) {
	if len(bs) == 0 {
		return
	}
	p := t.pool
	p.mu.Lock()
	for i := len(bs) - 1; i >= 0; i-- {
		p.free = append(p.free, bs[i])
	}
	p.mu.Unlock()
}
