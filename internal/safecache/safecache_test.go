package safecache

import (
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

func TestBound(t *testing.T) {
	c := New(2)
	k := func(i byte) [32]byte { return [32]byte{i} }
	c.Add(k(1))
	c.Add(k(2))
	c.Has(k(1)) // 1 is now the most recent
	c.Add(k(3))
	if !c.Has(k(1)) || c.Has(k(2)) || !c.Has(k(3)) || c.Len() != 2 || len(c.m) != 2 {
		t.Errorf("after 3 adds to a cache of 2: has 1 %v, 2 %v, 3 %v", c.Has(k(1)), c.Has(k(2)), c.Has(k(3)))
	}
}

func TestConcurrent(t *testing.T) {
	c := New(16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := [32]byte{byte(i % 40), byte(g)}
				if !c.Has(k) {
					c.Add(k)
				}
			}
		})
	}
	wg.Wait()
	if c.Len() != 16 || len(c.m) != 16 {
		t.Errorf("len %d/%d", c.Len(), len(c.m))
	}
}

// TestKey: the tenant, every part of the policy and the text each change
// the key.
func TestKey(t *testing.T) {
	base := guard.Policy{Mode: guard.Strict, Thresholds: map[string]float32{"Violent": 0.5}}
	k := Key("a", base, "text")
	for name, other := range map[string][32]byte{
		"tenant":    Key("b", base, "text"),
		"text":      Key("a", base, "text."),
		"mode":      Key("a", guard.Policy{Mode: guard.Loose, Thresholds: base.Thresholds}, "text"),
		"threshold": Key("a", guard.Policy{Mode: guard.Strict, Thresholds: map[string]float32{"Violent": 0.51}}, "text"),
		"block":     Key("a", guard.Policy{Mode: guard.Strict, Thresholds: base.Thresholds, Block: []string{"Violent"}}, "text"),
		"turns":     Key("a", guard.Policy{Mode: guard.Strict, Thresholds: base.Thresholds, EveryTurn: true}, "text"),
	} {
		if other == k {
			t.Errorf("another %s, the same key", name)
		}
	}
	if Key("a", guard.Policy{Mode: guard.Strict, Thresholds: map[string]float32{"Violent": 0.5}}, "text") != k {
		t.Error("the same tenant, policy and text, another key")
	}
}
