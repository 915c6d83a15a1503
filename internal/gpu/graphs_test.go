package gpu

import (
	"slices"
	"testing"
)

// fakeGraph records whether it was closed.
type fakeGraph struct {
	T      int
	closed *[]int
}

func (f fakeGraph) Close() error { *f.closed = append(*f.closed, f.T); return nil }

// TestGraphCachePlan walks the cache through its decisions: a token count
// is launched directly the first time, recorded the second, replayed after;
// counts above maxTokens never are; a full cache drops its least recently
// used graph; reset closes them all and forgets the counts.
func TestGraphCachePlan(t *testing.T) {
	var closed []int
	c := newGraphCache[fakeGraph](2, 64)
	step := func(T int) string {
		g, ok, record := c.plan(T)
		switch {
		case ok:
			if g.T != T {
				t.Fatalf("replaying the graph of %d tokens for a step of %d", g.T, T)
			}
			return "replay"
		case record:
			if err := c.add(T, fakeGraph{T: T, closed: &closed}); err != nil {
				t.Fatal(err)
			}
			return "record"
		}
		return "direct"
	}
	var got []string
	for _, T := range []int{1, 1, 1, 65, 65, 65, 4, 1, 4, 4, 7, 7, 1, 4} {
		got = append(got, step(T))
	}
	want := []string{
		"direct", "record", "replay", // T=1
		"direct", "direct", "direct", // T=65 > maxTokens
		"direct", "replay", "record", "replay", // T=4 beside T=1
		"direct", "record", // T=7: the cache holds 2, so T=1, least recently used, is closed
		"record", // T=1, seen before, is recorded again, closing T=4
		"record", // and T=4 again, closing T=7
	}
	if !slices.Equal(got, want) {
		t.Fatalf("decisions\n got %v\nwant %v", got, want)
	}
	if c.len() != 2 || !slices.Equal(closed, []int{1, 4, 7}) {
		t.Fatalf("%d graphs held, closed %v; want 2 held, closed [1 4 7]", c.len(), closed)
	}
	if err := c.reset(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(closed)
	if c.len() != 0 || !slices.Equal(closed, []int{1, 1, 4, 4, 7}) {
		t.Fatalf("after reset: %d graphs held, closed %v", c.len(), closed)
	}
	if s := step(7); s != "direct" {
		t.Fatalf("after reset a known count is %s, want direct (the counts are forgotten)", s)
	}
	var none *graphCache[fakeGraph]
	if _, ok, record := none.plan(1); ok || record {
		t.Fatal("a nil cache (graphs off) must launch directly")
	}
}
