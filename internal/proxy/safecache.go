package proxy

import (
	"container/list"
	"crypto/sha256"
	"fmt"
	"sync"
)

// safeCache remembers what the request side declared and the guard judged
// safe — tool definitions, a response schema — so that the requests of an
// agent, which send the same definitions every time, have them judged
// once: judging 40 tools is a prefill of about 2,000 tokens. A verdict is
// a pure function of the model, the tenant's policy and the text (the
// guard's verdicts do not depend on batching), so a remembered one is the
// one a new judgement would give; only safe verdicts are kept, and the
// least recently used is forgotten past max entries.
type safeCache struct {
	mu  sync.Mutex
	max int
	l   *list.List // of [32]byte, most recent first
	m   map[[32]byte]*list.Element
}

// safeCacheEntries bounds the cache: 32 bytes a key and a list element,
// under a MiB in all.
const safeCacheEntries = 8192

func newSafeCache(max int) *safeCache {
	return &safeCache{max: max, l: list.New(), m: map[[32]byte]*list.Element{}}
}

// key names text judged for t: its name and policy, which decide the
// verdict together with the text.
func safeKey(t *Tenant, text string) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%+v\x00", t.Name, t.Policy) // fmt prints maps sorted
	h.Write([]byte(text))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *safeCache) has(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if ok {
		c.l.MoveToFront(e)
	}
	return ok
}

func (c *safeCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.l.MoveToFront(e)
		return
	}
	c.m[k] = c.l.PushFront(k)
	if c.l.Len() > c.max {
		old := c.l.Remove(c.l.Back()).([32]byte)
		delete(c.m, old)
	}
}
