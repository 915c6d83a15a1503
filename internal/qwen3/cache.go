package qwen3

import (
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/internal/kernels"
)

// KVType is how a [Cache] stores keys and values. Attention reads every
// type directly (kernels.AttendBlock, AttendBlockBF16, AttendBlockInt8,
// AttendBlockInt4): nothing is widened into a float32 copy.
type KVType uint8

const (
	// KVF32 stores float32: exact, 4 bytes per element. It is the zero
	// value, so a model loaded with default [Options] (the reference and
	// golden tests, calibration) keeps the exact cache; the guard library
	// and the commands default to KVBF16.
	KVF32 KVType = iota
	// KVBF16 stores bfloat16, rounded to nearest even: 2 bytes per
	// element, relative error at most 2⁻⁹.
	KVBF16
	// KVInt8 stores each head's key (and value) at each position as int8
	// codes with one float32 scale, max|x|/127 (kernels.QuantizeInt8):
	// (head_dim + 4) bytes per head-vector, error at most half a step.
	// A position's codes depend on its own vector only, so appending never
	// rewrites older positions, and a row reads the same cache contents
	// however the sequence was chunked or batched.
	KVInt8
	// KVInt4 stores each head's key (and value) at each position rotated
	// (a fixed Hadamard rotation with random signs, which keeps dot
	// products) and quantized to 15-level codes with one float32 scale
	// (kernels.QuantizeInt4): (head_dim/2 + 4) bytes per head-vector,
	// about half the int8 cache. It needs head_dim a power of two (every
	// Qwen3 size has 128). Like int8, a position's codes depend on its
	// own vector only.
	KVInt4
)

// KVTypeNames are the names ParseKVType accepts, default first.
var KVTypeNames = []string{"bf16", "int8", "int4", "f32"}

// String is the type's name: f32, bf16, int8 or int4.
func (t KVType) String() string {
	switch t {
	case KVF32:
		return "f32"
	case KVBF16:
		return "bf16"
	case KVInt8:
		return "int8"
	case KVInt4:
		return "int4"
	}
	return fmt.Sprintf("KVType(%d)", uint8(t))
}

// ParseKVType reads a cache type name: bf16, int8, int4 or f32.
func ParseKVType(s string) (KVType, error) {
	switch s {
	case "f32":
		return KVF32, nil
	case "bf16":
		return KVBF16, nil
	case "int8":
		return KVInt8, nil
	case "int4":
		return KVInt4, nil
	}
	return 0, fmt.Errorf("unknown KV-cache type %q (want %s)", s, strings.Join(KVTypeNames, ", "))
}

// BytesPerPosition is the cache memory one position costs with kvHeads
// heads of headDim over layers layers, keys and values.
func (t KVType) BytesPerPosition(layers, kvHeads, headDim int) int64 {
	perHead := int64(headDim) * 4
	switch t {
	case KVBF16:
		perHead = int64(headDim) * 2
	case KVInt8:
		perHead = int64(headDim) + 4 // codes and a float32 scale
	case KVInt4:
		perHead = int64(headDim)/2 + 4
	}
	return 2 * int64(layers) * int64(kvHeads) * perHead
}

// minCacheCap is the first allocation of a cache, in positions: enough for
// a typical prompt without a regrowth, small enough that an idle stream is
// cheap.
const minCacheCap = 128

// Cache is one sequence's keys and values for every layer, at positions
// 0..Len()-1, stored as its [KVType]. Each layer stores keys (and values)
// head-major, [kv_heads][capacity][head_dim] (int8 scales
// [kv_heads][capacity]; int4 codes [kv_heads][capacity][head_dim/2]), so that the attention of one head reads one
// contiguous block.
//
// Capacity grows by a quarter (at least minCacheCap positions), rounded
// to whole blocks: the copy that growth costs is a few KV rows per token
// on average, small beside the KV read every step does, and at most a
// quarter of the memory is slack. It never exceeds the model's maximum
// position count. (internal/server's KV budget relies on these growth
// constants.) A Cache is used by one forward at a time.
type Cache struct {
	layers, kvHeads, headDim, maxLen int
	kv                               KVType
	k, v                             []kvStore // per layer
	n, capacity                      int
	owner                            *Model
}

// kvStore is one layer's keys (or values); only the fields of the
// cache's type are used.
type kvStore struct {
	f32   []float32
	bf16  []uint16
	i8    []int8
	i4    []byte    // two codes a byte
	scale []float32 // int8 and int4: [kv_heads][capacity]
}

// NewCache returns an empty cache of the model's KV type (Options.KVCache).
// It allocates nothing until the first tokens arrive.
func (m *Model) NewCache() *Cache { return m.NewCacheOf(m.kv) }

// NewCacheOf returns an empty cache storing keys and values as t, whatever
// the model's default; caches of different types may share a batch. A
// KVInt4 cache needs a head_dim that kernels.ValidInt4Dim accepts (Load
// checks it when KVInt4 is the model's type).
func (m *Model) NewCacheOf(t KVType) *Cache { return m.newCache(len(m.Layers), t) }

func (m *Model) newCache(layers int, t KVType) *Cache {
	a := m.Layers[0].Attn
	return &Cache{
		layers: layers, kvHeads: a.KVHeads, headDim: a.HeadDim, maxLen: m.MaxPositions, kv: t,
		k: make([]kvStore, layers), v: make([]kvStore, layers),
		owner: m,
	}
}

// KVCache is the type of the caches NewCache returns.
func (m *Model) KVCache() KVType { return m.kv }

// Type is how the cache stores keys and values.
func (c *Cache) Type() KVType { return c.kv }

// Len is the number of positions filled.
func (c *Cache) Len() int { return c.n }

// Cap is the number of positions allocated.
func (c *Cache) Cap() int { return c.capacity }

// MaxLen is the model's position limit (max_position_embeddings).
func (c *Cache) MaxLen() int { return c.maxLen }

// Bytes is the memory the cache holds now.
func (c *Cache) Bytes() int64 { return int64(c.capacity) * c.BytesPerPosition() }

// BytesPerPosition is the memory one position of this cache costs.
func (c *Cache) BytesPerPosition() int64 {
	return c.kv.BytesPerPosition(c.layers, c.kvHeads, c.headDim)
}

// BytesPerPosition is the KV-cache memory one token costs in the caches
// NewCache returns, for budgeting.
func (m *Model) BytesPerPosition() int64 {
	a := m.Layers[0].Attn
	return m.kv.BytesPerPosition(len(m.Layers), a.KVHeads, a.HeadDim)
}

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
		c.grow(&c.k[l], want)
		c.grow(&c.v[l], want)
	}
	c.capacity = want
	return nil
}

// grow copies each head's filled positions into larger head-major buffers.
func (c *Cache) grow(s *kvStore, newCap int) {
	H, hd, old, n := c.kvHeads, c.headDim, c.capacity, c.n
	switch c.kv {
	case KVBF16:
		s.bf16 = regrow(s.bf16, H, old, newCap, n, hd)
	case KVInt8:
		s.i8 = regrow(s.i8, H, old, newCap, n, hd)
		s.scale = regrow(s.scale, H, old, newCap, n, 1)
	case KVInt4:
		s.i4 = regrow(s.i4, H, old, newCap, n, hd/2)
		s.scale = regrow(s.scale, H, old, newCap, n, 1)
	default:
		s.f32 = regrow(s.f32, H, old, newCap, n, hd)
	}
}

// regrow copies the first n rows of width elements of each of heads
// blocks of oldCap rows into blocks of newCap rows.
func regrow[T float32 | uint16 | int8 | byte](old []T, heads, oldCap, newCap, n, width int) []T {
	s := make([]T, heads*newCap*width)
	for h := range heads {
		copy(s[h*newCap*width:], old[h*oldCap*width:h*oldCap*width+n*width])
	}
	return s
}

// Prefault writes zeros over the cache's unfilled positions, so that the
// first-touch page faults of that memory happen now, not in the forwards
// that fill it. The bench calls it on the fresh caches it times: there a
// bf16 cache faults once per 16 positions of every layer, head, key and
// value (448 pages per step at the 0.6B's shapes, every 16th step),
// while a server's caches mostly reuse heap memory that earlier streams
// already touched.
func (c *Cache) Prefault() {
	H, hd, capacity, n := c.kvHeads, c.headDim, c.capacity, c.n
	for _, stores := range [][]kvStore{c.k, c.v} {
		for i := range stores {
			s := &stores[i]
			clearRows(s.f32, H, capacity, n, hd)
			clearRows(s.bf16, H, capacity, n, hd)
			clearRows(s.i8, H, capacity, n, hd)
			clearRows(s.i4, H, capacity, n, hd/2)
			clearRows(s.scale, H, capacity, n, 1)
		}
	}
}

// clearRows zeroes rows n..capRows-1 of width elements in each of heads
// blocks of capRows rows; an empty s (a type the cache does not use) is
// left alone.
func clearRows[T float32 | uint16 | int8 | byte](s []T, heads, capRows, n, width int) {
	if len(s) == 0 {
		return
	}
	for h := range heads {
		clear(s[(h*capRows+n)*width : (h+1)*capRows*width])
	}
}

// put stores one head's key and value at pos (pos < Cap()), rounding or
// quantizing them to the cache's type; tmp (head_dim floats, one per
// concurrent caller) holds the int4 cache's rotated copy.
func (c *Cache) put(l, h, pos int, k, v, tmp []float32) {
	hd := c.headDim
	at := (h*c.capacity + pos) * hd
	c.k[l].put(c.kv, at, h*c.capacity+pos, hd, k, tmp)
	c.v[l].put(c.kv, at, h*c.capacity+pos, hd, v, tmp)
}

func (s *kvStore) put(t KVType, at, scaleAt, hd int, x, tmp []float32) {
	switch t {
	case KVBF16:
		kernels.ToBF16(s.bf16[at:at+hd], x[:hd])
	case KVInt8:
		s.scale[scaleAt] = kernels.QuantizeInt8(s.i8[at:at+hd], x[:hd])
	case KVInt4:
		s.scale[scaleAt] = kernels.QuantizeInt4(s.i4[at/2:at/2+hd/2], x[:hd], tmp)
	default:
		copy(s.f32[at:at+hd], x[:hd])
	}
}

// attend runs kernels.AttendBlock (for the cache's type) for rows
// consecutive rows of this sequence over layer l's KV head h, the first
// row attending to n0 positions; see kernels.AttendBlock for the rest.
func (c *Cache) attend(l, h int, out []float32, ostride int, q []float32, qstride, rows, g, n0 int, scale float32, scratch []float32) {
	hd := c.headDim
	lo, hi := h*c.capacity*hd, (h+1)*c.capacity*hd
	k, v := &c.k[l], &c.v[l]
	switch c.kv {
	case KVBF16:
		kernels.AttendBlockBF16(out, ostride, q, qstride, rows, g, k.bf16[lo:hi], v.bf16[lo:hi], n0, hd, hd, scale, scratch)
	case KVInt8:
		slo, shi := h*c.capacity, (h+1)*c.capacity
		kernels.AttendBlockInt8(out, ostride, q, qstride, rows, g, k.i8[lo:hi], v.i8[lo:hi], k.scale[slo:shi], v.scale[slo:shi], n0, hd, hd, scale, scratch)
	case KVInt4:
		slo, shi := h*c.capacity, (h+1)*c.capacity
		kernels.AttendBlockInt4(out, ostride, q, qstride, rows, g, k.i4[lo/2:hi/2], v.i4[lo/2:hi/2], k.scale[slo:shi], v.scale[slo:shi], n0, hd, hd/2, scale, scratch)
	default:
		kernels.AttendBlock(out, ostride, q, qstride, rows, g, k.f32[lo:hi], v.f32[lo:hi], n0, hd, hd, scale, scratch)
	}
}

// attendsHeads reports whether attendHeads reads several heads in turns
// for this cache's type (bfloat16, int8); otherwise a decode step's items
// take one head each.
func (c *Cache) attendsHeads() bool { return c.kv == KVBF16 || c.kv == KVInt8 }

// attendHeads is attend for one row over key/value heads [h0, h0+n),
// read in turns where the type allows (attendsHeads; kernels.AttendHeadsBF16
// and AttendHeadsInt8): head h's g queries at q[(h-h0)*g*d:], its outputs
// at out[(h-h0)*g*d:]; scratch holds kernels.AttendHeadsScratch(n, g, n0, d)
// floats.
func (c *Cache) attendHeads(l, h0, n int, out, q []float32, g, n0 int, scale float32, scratch []float32) {
	hd := c.headDim
	if !c.attendsHeads() || n > maxItemHeads {
		// A batch may mix cache types: head after head.
		for h := h0; h < h0+n; h++ {
			o := (h - h0) * g * hd
			c.attend(l, h, out[o:], g*hd, q[o:], g*hd, 1, g, n0, scale, scratch)
		}
		return
	}
	ks, vs := &c.k[l], &c.v[l]
	if c.kv == KVInt8 {
		var k, v [maxItemHeads][]int8
		var kscale, vscale [maxItemHeads][]float32
		for i := range n {
			lo, slo := (h0+i)*c.capacity*hd, (h0+i)*c.capacity
			k[i], v[i] = ks.i8[lo:lo+n0*hd], vs.i8[lo:lo+n0*hd]
			kscale[i], vscale[i] = ks.scale[slo:slo+n0], vs.scale[slo:slo+n0]
		}
		kernels.AttendHeadsInt8(out, q, g, k[:n], v[:n], kscale[:n], vscale[:n], n0, hd, scale, scratch)
		return
	}
	var k, v [maxItemHeads][]uint16
	for i := range n {
		lo := (h0 + i) * c.capacity * hd
		k[i], v[i] = ks.bf16[lo:lo+n0*hd], vs.bf16[lo:lo+n0*hd]
	}
	kernels.AttendHeadsBF16(out, q, g, k[:n], v[:n], n0, hd, scale, scratch)
}

// maxItemHeads bounds attendHeads' heads (its slices live on the stack).
const maxItemHeads = 8

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
// contents correspond to no token sequence. The values drawn are the
// same for every cache type (and rounded or quantized to it).
func (c *Cache) FillRandom(n int, seed uint64) error {
	if err := c.Reserve(n); err != nil {
		return err
	}
	x := seed | 1
	hd := c.headDim
	buf, tmp := make([]float32, hd), make([]float32, hd)
	for l := range c.k {
		for h := range c.kvHeads {
			for _, s := range []*kvStore{&c.k[l], &c.v[l]} {
				for pos := range n {
					for i := range buf {
						x ^= x << 13
						x ^= x >> 7
						x ^= x << 17
						buf[i] = float32(int32(x>>32))/(1<<31) - 0.5
					}
					s.put(c.kv, (h*c.capacity+pos)*hd, h*c.capacity+pos, hd, buf, tmp)
				}
			}
		}
	}
	c.n = n
	return nil
}
