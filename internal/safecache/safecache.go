// Package safecache remembers texts the guard judged safe for a tenant:
// what a request declares beside its messages — tool definitions, a
// response schema — which an agent sends, the same, with every request, so
// that it is judged once (judging 40 tools is a prefill of about 2,000
// tokens). A verdict is a pure function of the model, the policy and the
// text (the guard's verdicts do not depend on batching), so a remembered
// one is the one a new judgement would give; only safe verdicts are kept,
// and the least recently used is forgotten past the cache's size. The
// proxy (and ext_proc through it) and the LiteLLM API share the idea, each
// with its cache.
package safecache

import (
	"container/list"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/streamguard/streamguard/guard"
)

// Entries is the size the servers use: 32 bytes a key and a list
// element, under a MiB in all.
const Entries = 8192

// Cache is a set of keys, least recently used forgotten first. It is
// safe for concurrent use.
type Cache struct {
	mu  sync.Mutex
	max int
	l   *list.List // of [32]byte, most recent first
	m   map[[32]byte]*list.Element
}

// New returns a cache of at most max keys.
func New(max int) *Cache {
	return &Cache{max: max, l: list.New(), m: map[[32]byte]*list.Element{}}
}

// Key names text judged for a tenant: its name and policy decide the
// verdict with the text.
func Key(tenant string, p guard.Policy, text string) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%+v\x00", tenant, p) // fmt prints maps sorted
	h.Write([]byte(text))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// Has reports whether k is in the cache, making it the most recent.
func (c *Cache) Has(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if ok {
		c.l.MoveToFront(e)
	}
	return ok
}

// Add puts k in the cache, forgetting the least recent key past its size.
func (c *Cache) Add(k [32]byte) {
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

// Len is the number of keys held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l.Len()
}
