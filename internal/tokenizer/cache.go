package tokenizer

import (
	"hash/maphash"
	"sync"
)

// pieceCache remembers the ids of recent pre-tokens: text repeats words, and
// a lookup is far cheaper than BPE. Short pieces (nearly all of them) live
// inline in a set-associative table, key and ids in one 32-byte entry, so a
// hit costs one memory access; longer ones go to a map. Both are bounded:
// a full set overwrites one of its entries, a full map is emptied. Shards
// with their own lock keep concurrent encoders from waiting on each other.
type pieceCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const (
	cacheShards      = 16
	cacheShardSets   = 1024 // sets of cacheWays entries per shard
	cacheWays        = 4
	cacheMapMax      = 4096 // long-piece entries per shard
	cacheMaxPieceLen = 256  // longer pieces are rare and not worth keeping
	inlineKeyLen     = 16
	inlineIDs        = 3
)

type cacheEntry struct {
	k0, k1 uint64 // the piece's bytes, little-endian, zero-padded
	ids    [inlineIDs]int32
	klen   uint8
	n      uint8 // number of ids; 0 marks an empty entry
}

type cacheShard struct {
	mu      sync.Mutex
	entries []cacheEntry
	long    map[string][]int32
	_       [32]byte // keep shards' locks on separate cache lines
}

func (c *pieceCache) init() {
	c.seed = maphash.MakeSeed()
	for i := range c.shards {
		c.shards[i].entries = make([]cacheEntry, cacheShardSets*cacheWays)
		c.shards[i].long = make(map[string][]int32)
	}
}

func packKey(piece string) (k0, k1 uint64) {
	for i := 0; i < len(piece) && i < 8; i++ {
		k0 |= uint64(piece[i]) << (8 * i)
	}
	for i := 8; i < len(piece); i++ {
		k1 |= uint64(piece[i]) << (8 * (i - 8))
	}
	return k0, k1
}

func mixKey(k0, k1 uint64, n int) uint64 {
	h := (k0 ^ uint64(n)<<56) * 0x9E3779B97F4A7C15
	h ^= k1 * 0xC2B2AE3D27D4EB4F
	return h ^ h>>29
}

// appendCached appends the cached ids of piece to out.
func (c *pieceCache) appendCached(piece string, out []int) ([]int, bool) {
	if len(piece) > inlineKeyLen {
		return c.appendLong(piece, out)
	}
	k0, k1 := packKey(piece)
	h := mixKey(k0, k1, len(piece))
	s := &c.shards[h%cacheShards]
	set := s.entries[(h>>8)%cacheShardSets*cacheWays:][:cacheWays]
	s.mu.Lock()
	for i := range set {
		e := &set[i]
		if e.k0 == k0 && e.k1 == k1 && int(e.klen) == len(piece) && e.n != 0 {
			n, ids := e.n, e.ids
			s.mu.Unlock()
			for _, id := range ids[:n] {
				out = append(out, int(id))
			}
			return out, true
		}
	}
	s.mu.Unlock()
	// Short pieces with many ids are kept with the long ones.
	return c.appendLong(piece, out)
}

func (c *pieceCache) appendLong(piece string, out []int) ([]int, bool) {
	s := &c.shards[maphash.String(c.seed, piece)%cacheShards]
	s.mu.Lock()
	ids, ok := s.long[piece]
	s.mu.Unlock()
	for _, id := range ids {
		out = append(out, int(id))
	}
	return out, ok
}

func (c *pieceCache) put(piece string, ids []int) {
	if len(piece) > inlineKeyLen || len(ids) > inlineIDs {
		v := make([]int32, len(ids))
		for i, id := range ids {
			v[i] = int32(id)
		}
		key := string([]byte(piece)) // do not pin the caller's text
		s := &c.shards[maphash.String(c.seed, piece)%cacheShards]
		s.mu.Lock()
		if len(s.long) >= cacheMapMax {
			clear(s.long)
		}
		s.long[key] = v
		s.mu.Unlock()
		return
	}
	k0, k1 := packKey(piece)
	h := mixKey(k0, k1, len(piece))
	e := cacheEntry{k0: k0, k1: k1, klen: uint8(len(piece)), n: uint8(len(ids))}
	for i, id := range ids {
		e.ids[i] = int32(id)
	}
	s := &c.shards[h%cacheShards]
	set := s.entries[(h>>8)%cacheShardSets*cacheWays:][:cacheWays]
	s.mu.Lock()
	victim := int(h>>40) % cacheWays
	for i := range set {
		if set[i].n == 0 {
			victim = i
			break
		}
	}
	set[victim] = e
	s.mu.Unlock()
}
