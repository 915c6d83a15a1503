package proxy

import (
	"sync"
	"testing"
)

func TestSafeCacheConcurrent(t *testing.T) {
	c := newSafeCache(16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := [32]byte{byte(i % 40), byte(g)}
				if !c.has(k) {
					c.add(k)
				}
			}
		})
	}
	wg.Wait()
	if c.l.Len() != 16 || len(c.m) != 16 {
		t.Errorf("len %d/%d", c.l.Len(), len(c.m))
	}
}
