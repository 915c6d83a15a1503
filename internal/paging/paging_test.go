package paging

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

func TestGrowSlotsRelease(t *testing.T) {
	p, err := NewPool(4, 16)
	if err != nil {
		t.Fatal(err)
	}
	a, b := p.NewTable(), p.NewTable()
	if err := a.Grow(17); err != nil { // two blocks: 0, 1
		t.Fatal(err)
	}
	if err := b.Grow(1); err != nil { // block 2
		t.Fatal(err)
	}
	if got := a.Blocks(); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Errorf("a's table %v, want [0 1]", got)
	}
	if s := a.Slot(16); s != 16 {
		t.Errorf("a: slot of position 16 = %d, want 16", s)
	}
	if s := b.Slot(0); s != 32 {
		t.Errorf("b: slot of position 0 = %d, want 32", s)
	}
	if err := a.Grow(15); err != nil || len(a.Blocks()) != 2 { // fills block 1 exactly
		t.Fatalf("grow within the last block: %v, %d blocks", err, len(a.Blocks()))
	}
	// One block left; b needs two more: nothing is taken.
	err = b.Grow(40)
	if !errors.Is(err, ErrExhausted) || p.Free() != 1 || b.Len() != 1 {
		t.Fatalf("over-grow: %v, free %d, b len %d", err, p.Free(), b.Len())
	}
	a.Truncate(10)
	if len(a.Blocks()) != 1 || a.Len() != 10 || p.Free() != 2 {
		t.Errorf("truncate: %d blocks, len %d, %d free", len(a.Blocks()), a.Len(), p.Free())
	}
	a.Release()
	b.Release()
	if p.Free() != 4 || a.Len() != 0 || len(a.Blocks()) != 0 {
		t.Errorf("release: %d free", p.Free())
	}
}

// TestConcurrentTablesNeverShareBlocks grows and releases tables from many
// goroutines (run with -race) and checks that no block is ever lent twice
// and none is lost.
func TestConcurrentTablesNeverShareBlocks(t *testing.T) {
	const blocks = 64
	p, _ := NewPool(blocks, 8)
	var mu sync.Mutex
	owner := map[int32]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			tab := p.NewTable()
			for range 500 {
				if r.IntN(4) == 0 {
					mu.Lock()
					for _, b := range tab.Blocks() {
						delete(owner, b)
					}
					mu.Unlock()
					tab.Release()
					continue
				}
				before := len(tab.Blocks())
				if err := tab.Grow(r.IntN(20)); err != nil {
					if !errors.Is(err, ErrExhausted) {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				for _, b := range tab.Blocks()[before:] {
					if o, taken := owner[b]; taken {
						t.Errorf("block %d lent to goroutine %d and %d", b, o, g)
					}
					owner[b] = g
				}
				mu.Unlock()
			}
			mu.Lock()
			for _, b := range tab.Blocks() {
				delete(owner, b)
			}
			mu.Unlock()
			tab.Release()
		})
	}
	wg.Wait()
	if p.Free() != blocks {
		t.Errorf("%d of %d blocks free after every table was released", p.Free(), blocks)
	}
}

func TestBadPool(t *testing.T) {
	for _, c := range [][2]int{{0, 16}, {4, 0}, {-1, 16}} {
		if _, err := NewPool(c[0], c[1]); err == nil {
			t.Errorf("NewPool(%d, %d) accepted", c[0], c[1])
		}
	}
}
