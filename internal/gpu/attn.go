package gpu

// The tensor-core attention's host side (attn.cuh describes the kernels).

const (
	attnHeadDim = 128 // ATT_HD: the only head size the kernels take
	attnKeys    = 16  // ATT_KB: keys per block; cache blocks hold a multiple of it
	attnChunk   = 512 // ATT_CHUNK: keys per chunk state
	attnTile    = 16  // ATT_TILE: tokens per tile
	attnState   = attnHeadDim + 2
	// attnSplits is grid.z: the blocks that share a tile's chunks (chunk
	// z, z+8, ...). More let a long stream's decode use more of the GPU;
	// it changes no result.
	attnSplits = 8
)

// attnFits reports whether a model's attention can take the tensor-core
// kernels.
func attnFits(headDim, blockSize int) bool {
	return headDim == attnHeadDim && blockSize%attnKeys == 0
}

// attnLayout lays out a batch for the kernels: lens are the new tokens of
// each sequence in batch order and pos each token's position. tiles holds
// (first token, rows) for runs of up to 16 consecutive tokens of one
// sequence, then (0, 0) up to T entries, so that the grid (T tiles) is a
// function of T alone; soff is each token's first chunk-state index, and
// states their total (per head).
func attnLayout(lens []int, pos []int32) (tiles, soff []int32, states int) {
	T := len(pos)
	tiles = make([]int32, 0, 2*T)
	t := 0
	for _, n := range lens {
		for i := 0; i < n; i += attnTile {
			tiles = append(tiles, int32(t+i), int32(min(attnTile, n-i)))
		}
		t += n
	}
	for len(tiles) < 2*T {
		tiles = append(tiles, 0, 0)
	}
	soff = make([]int32, T)
	for i, p := range pos {
		soff[i] = int32(states)
		states += int(p)/attnChunk + 1
	}
	return tiles, soff, states
}
