package qwen3

import "fmt"

// minCacheCap is the first allocation of a cache, in positions: enough for
// a typical prompt without a regrowth, small enough that an idle stream is
// cheap.
const minCacheCap = 128

// Cache is one sequence's float32 keys and values for every layer, at
// positions 0..Len()-1. Each layer stores keys (and values) head-major,
// [kv_heads][capacity][head_dim], so that the attention of one head reads
// one contiguous block.
//
// Capacity grows by a quarter (at least minCacheCap positions), rounded
// to whole blocks: the copy that growth costs is a few KV rows per token
// on average, small beside the KV read every step does, and at most a
// quarter of the memory is slack. It never exceeds the model's maximum
// position count. A Cache is used by one forward at a time.
type Cache struct {
	layers, kvHeads, headDim, maxLen int
	k, v                             [][]float32 // per layer
	n, capacity                      int
	owner                            *Model
}

// NewCache returns an empty cache for m. It allocates nothing until the
// first tokens arrive.
func (m *Model) NewCache() *Cache {
	a := m.Layers[0].Attn
	return &Cache{
		layers: len(m.Layers), kvHeads: a.KVHeads, headDim: a.HeadDim, maxLen: m.MaxPositions,
		k: make([][]float32, len(m.Layers)), v: make([][]float32, len(m.Layers)),
		owner: m,
	}
}

// Len is the number of positions filled.
func (c *Cache) Len() int { return c.n }

// Cap is the number of positions allocated.
func (c *Cache) Cap() int { return c.capacity }

// MaxLen is the model's position limit (max_position_embeddings).
func (c *Cache) MaxLen() int { return c.maxLen }

// Bytes is the memory the cache holds now.
func (c *Cache) Bytes() int64 { return int64(c.capacity) * c.bytesPerPos() }

func (c *Cache) bytesPerPos() int64 { return 2 * int64(c.layers) * int64(c.kvHeads*c.headDim) * 4 }

// BytesPerPosition is the KV-cache memory one token costs, for budgeting.
func (m *Model) BytesPerPosition() int64 { return 2 * int64(len(m.Layers)) * int64(m.kvDim) * 4 }

// cacheBlock rounds capacities so that growth steps stay coarse.
const cacheBlock = 64

// Reserve makes room for n positions in total, so that later forwards up to
// that length allocate nothing.
func (c *Cache) Reserve(n int) error {
	if n > c.maxLen {
		return fmt.Errorf("sequence of %d tokens exceeds max_position_embeddings %d", n, c.maxLen)
	}
	if n <= c.capacity {
		return nil
	}
	want := max(n, c.capacity+max(minCacheCap, c.capacity/4))
	want = min(c.maxLen, (want+cacheBlock-1)/cacheBlock*cacheBlock)
	for l := range c.k {
		c.k[l] = c.regrow(c.k[l], want)
		c.v[l] = c.regrow(c.v[l], want)
	}
	c.capacity = want
	return nil
}

// regrow copies each head's filled positions into a larger head-major
// buffer.
func (c *Cache) regrow(old []float32, newCap int) []float32 {
	hd := c.headDim
	s := make([]float32, c.kvHeads*newCap*hd)
	for h := range c.kvHeads {
		copy(s[h*newCap*hd:], old[h*c.capacity*hd:h*c.capacity*hd+c.n*hd])
	}
	return s
}

// head returns the key and value storage of one layer's KV head:
// [capacity][head_dim] each.
func (c *Cache) head(l, h int) (k, v []float32) {
	size := c.capacity * c.headDim
	return c.k[l][h*size : (h+1)*size], c.v[l][h*size : (h+1)*size]
}

// Truncate forgets positions n and beyond (keeping the memory), so a
// sequence can be rolled back, for example after a failed step.
func (c *Cache) Truncate(n int) {
	if n >= 0 && n < c.n {
		c.n = n
	}
}

// Release drops the memory; the cache is empty and usable again.
func (c *Cache) Release() {
	clear(c.k)
	clear(c.v)
	c.n, c.capacity = 0, 0
}

// FillRandom sets the cache to n positions of pseudo-random keys and
// values, as if n tokens had been fed. The cost of a later step depends
// only on the length, so benchmarks use it to measure a step at position
// 4000 without a 4000-token prefill. It is for benchmarks only: the
// contents correspond to no token sequence.
func (c *Cache) FillRandom(n int, seed uint64) error {
	if err := c.Reserve(n); err != nil {
		return err
	}
	x := seed | 1
	for l := range c.k {
		for h := range c.kvHeads {
			k, v := c.head(l, h)
			for _, s := range [][]float32{k[:n*c.headDim], v[:n*c.headDim]} {
				for i := range s {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					s[i] = float32(int32(x>>32))/(1<<31) - 0.5
				}
			}
		}
	}
	c.n = n
	return nil
}
