package gpu

import (
	"errors"
	"io"
)

// graphCache decides, forward by forward, whether to launch a step's
// kernels one by one, record them into a graph, or replay a recorded one.
//
// A step's launches depend only on its token count T and on the
// workspace's buffers (every other per-step value — ids, positions, cache
// slots, block tables — is read by the kernels from device memory), so one
// graph per T replays any later step of T tokens. Recording costs about as
// much as launching, plus instantiation, so a graph is recorded at the
// second step of a given T, not the first: decode steps repeat their
// stream count, while a prompt's odd length may never come back. The cache
// holds at most limit graphs, dropping the least recently used, and only
// for T ≤ maxTokens, where launches are a noticeable part of a step.
type graphCache[G io.Closer] struct {
	limit, maxTokens int
	seen             map[int]bool // token counts met once, since the last reset
	graphs           map[int]*graphEntry[G]
	clock            uint64
}

type graphEntry[G io.Closer] struct {
	g    G
	used uint64
}

func newGraphCache[G io.Closer](limit, maxTokens int) *graphCache[G] {
	return &graphCache[G]{limit: limit, maxTokens: maxTokens, seen: map[int]bool{}, graphs: map[int]*graphEntry[G]{}}
}

// plan returns the graph to replay for a step of T tokens (ok), or whether
// the step should be recorded (record) rather than launched directly.
func (c *graphCache[G]) plan(T int) (g G, ok, record bool) {
	if c == nil || T > c.maxTokens || c.limit <= 0 {
		return g, false, false
	}
	c.clock++
	if e, hit := c.graphs[T]; hit {
		e.used = c.clock
		return e.g, true, false
	}
	if c.seen[T] {
		return g, false, true
	}
	c.seen[T] = true
	return g, false, false
}

// add keeps g as the graph of T, closing the least recently used graph
// when the cache is full.
func (c *graphCache[G]) add(T int, g G) error {
	var err error
	if len(c.graphs) >= c.limit {
		oldest, at := 0, ^uint64(0)
		for t, e := range c.graphs {
			if e.used < at {
				oldest, at = t, e.used
			}
		}
		err = c.graphs[oldest].g.Close()
		delete(c.graphs, oldest)
	}
	c.graphs[T] = &graphEntry[G]{g: g, used: c.clock}
	return err
}

// reset closes every graph and forgets the token counts seen: the buffers
// the graphs read have changed.
func (c *graphCache[G]) reset() error {
	if c == nil {
		return nil
	}
	var errs []error
	for t, e := range c.graphs {
		errs = append(errs, e.g.Close())
		delete(c.graphs, t)
	}
	clear(c.seen)
	return errors.Join(errs...)
}

// len is the number of graphs held.
func (c *graphCache[G]) len() int {
	if c == nil {
		return 0
	}
	return len(c.graphs)
}
