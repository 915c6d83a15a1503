package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

func TestAttnLayout(t *testing.T) {
	// Three sequences of 35, 1 and 16 new tokens at various positions.
	lens := []int{35, 1, 16}
	pos := make([]int32, 0, 52)
	for i := range 35 {
		pos = append(pos, int32(490+i)) // crosses position 512: one more chunk
	}
	pos = append(pos, 5000)
	for i := range 16 {
		pos = append(pos, int32(i))
	}
	tiles, soff, states := attnLayout(lens, pos)
	want := []int32{0, 16, 16, 16, 32, 3, 35, 1, 36, 16}
	for len(want) < 2*len(pos) {
		want = append(want, 0, 0)
	}
	if fmt.Sprint(tiles) != fmt.Sprint(want) {
		t.Fatalf("tiles %v\nwant  %v", tiles, want)
	}
	// Tokens at 490..511 have one chunk, 512..524 two; 5000 has 10.
	if soff[0] != 0 || soff[22] != 22 || soff[23] != 24 || soff[35] != 22+2*13 || soff[36] != 48+10 || states != 58+16 {
		t.Fatalf("soff %v, states %d", soff, states)
	}
}

// attnCase is a paged cache holding a few streams, for the attention
// kernels: bf16 keys and values of every position of each stream, in
// blocks given out in shuffled order; every slot no stream has written
// holds NaN, which a correct mask never lets through.
type attnCase struct {
	heads, kvHeads, bs, slots int
	scale                     float32
	kc, vc                    []uint16 // [slots][kvHeads][128]
	tables                    []int32
	off                       []int32 // each stream's table offset
	length                    []int   // positions each stream holds
	q                         [][]float32
}

func newAttnCase(r *rand.Rand, heads, kvHeads, bs int, lengths []int) *attnCase {
	c := &attnCase{heads: heads, kvHeads: kvHeads, bs: bs, scale: float32(1 / math.Sqrt(attnHeadDim)), length: lengths}
	nb := 0
	for _, L := range lengths {
		nb += (L + bs - 1) / bs
	}
	nb += 3 // blocks no stream holds
	c.slots = nb * bs
	kvd := kvHeads * attnHeadDim
	c.kc, c.vc = make([]uint16, c.slots*kvd), make([]uint16, c.slots*kvd)
	for i := range c.kc {
		c.kc[i], c.vc[i] = 0x7FC0, 0x7FC0 // NaN
	}
	perm := r.Perm(nb)
	for _, L := range lengths {
		c.off = append(c.off, int32(len(c.tables)))
		for b := 0; b < (L+bs-1)/bs; b++ {
			c.tables = append(c.tables, int32(perm[0]))
			perm = perm[1:]
		}
		for p := range L {
			slot := int(c.tables[int(c.off[len(c.off)-1])+p/bs])*bs + p%bs
			for i := range kvd {
				c.kc[slot*kvd+i] = half.F32ToBF16(float32(r.NormFloat64()))
				c.vc[slot*kvd+i] = half.F32ToBF16(float32(r.NormFloat64()))
			}
		}
		q := make([]float32, L*heads*attnHeadDim)
		for i := range q {
			q[i] = float32(r.NormFloat64() * 2)
		}
		c.q = append(c.q, q)
	}
	return c
}

// span is a sequence of a batch: stream s's positions from..from+n-1.
type span struct{ s, from, n int }

// batch returns the kernels' inputs for spans: lens, pos, table offsets and
// the queries.
func (c *attnCase) batch(spans []span) (lens []int, pos, toff []int32, q []float32) {
	hq := c.heads * attnHeadDim
	for _, sp := range spans {
		lens = append(lens, sp.n)
		for p := sp.from; p < sp.from+sp.n; p++ {
			pos = append(pos, int32(p))
			toff = append(toff, c.off[sp.s])
			q = append(q, c.q[sp.s][p*hq:(p+1)*hq]...)
		}
	}
	return lens, pos, toff, q
}

// want is the exact attention of stream s's query at position p, head h.
func (c *attnCase) want(s, p, h int) []float64 {
	kvd, kvh := c.kvHeads*attnHeadDim, h/(c.heads/c.kvHeads)
	q := c.q[s][(p*c.heads+h)*attnHeadDim:]
	score := make([]float64, p+1)
	m := math.Inf(-1)
	slot := func(k int) int { return int(c.tables[int(c.off[s])+k/c.bs])*c.bs + k%c.bs }
	for k := range p + 1 {
		var d float64
		for i := range attnHeadDim {
			d += float64(q[i]) * float64(c.scale) * float64(half.BF16ToF32(c.kc[slot(k)*kvd+kvh*attnHeadDim+i]))
		}
		score[k] = d
		m = max(m, d)
	}
	out := make([]float64, attnHeadDim)
	var l float64
	for k := range p + 1 {
		e := math.Exp(score[k] - m)
		l += e
		for i := range out {
			out[i] += e * float64(half.BF16ToF32(c.vc[slot(k)*kvd+kvh*attnHeadDim+i]))
		}
	}
	for i := range out {
		out[i] /= l
	}
	return out
}

// emuAttention runs attn_chunk then attn_merge on the emulator.
func emuAttention(t *testing.T, bin string, c *attnCase, spans []span, splits int) []float32 {
	t.Helper()
	lens, pos, toff, q := c.batch(spans)
	tiles, soff, states := attnLayout(lens, pos)
	T := len(pos)
	return emuCall(t, bin, T*c.heads*attnHeadDim,
		[]int32{1, int32(T), int32(c.heads), int32(c.kvHeads), int32(c.bs), int32(c.slots), int32(splits), int32(states)},
		c.scale, tiles, int32(len(c.tables)), c.tables, toff, pos, soff, q, c.kc, c.vc)
}

// checkAttention runs the batch of spans through run (tokens' outputs for
// spans and a split count) and checks every output against the exact
// attention, then a token's output bitwise across ways of batching it: alone,
// in a shorter span (the first span of over 7 tokens, 7 tokens later: other
// tile boundaries), and with one split.
//
// Tolerance: the queries and the probabilities keep 16 significant bits
// (2^-17 relative each), keys and values are exact, sums are float32 and
// the GPU's exp is an approximation (__expf, a few ulps); outputs are
// averages of unit-normal values, so 1e-4 absolute is far above the
// arithmetic and far below any misplaced key or value.
func checkAttention(t *testing.T, c *attnCase, spans []span, run func(spans []span, splits int) []float32) {
	t.Helper()
	hq := c.heads * attnHeadDim
	y := run(spans, attnSplits)
	worst, i := 0.0, 0
	for _, sp := range spans {
		for p := sp.from; p < sp.from+sp.n; p++ {
			for h := range c.heads {
				w := c.want(sp.s, p, h)
				for d := range attnHeadDim {
					got := float64(y[i*hq+h*attnHeadDim+d])
					if e := math.Abs(got - w[d]); !(e <= 1e-4) {
						t.Fatalf("stream %d position %d head %d dim %d: %g, want %g", sp.s, p, h, d, got, w[d])
					} else {
						worst = max(worst, e)
					}
				}
			}
			i++
		}
	}
	t.Logf("attention over %d tokens: worst error %.3g", i, worst)
	row := func(y []float32, i int) []float32 { return y[i*hq : (i+1)*hq] }
	sameBits(t, "one split against eight", run(spans, 1), y)
	// The first span's tokens again, starting 7 tokens later (other tiles),
	// and its last token alone.
	for k, sp := range spans {
		if sp.n <= 7 {
			continue
		}
		first := 0
		for _, s := range spans[:k] {
			first += s.n
		}
		later := run([]span{{sp.s, sp.from + 7, sp.n - 7}}, attnSplits)
		for j := range sp.n - 7 {
			sameBits(t, fmt.Sprintf("stream %d's token %d in a span starting later", sp.s, sp.from+7+j), row(later, j), row(y, first+7+j))
		}
		break
	}
	off := 0
	for _, sp := range spans {
		alone := run([]span{{sp.s, sp.from + sp.n - 1, 1}}, attnSplits)
		sameBits(t, fmt.Sprintf("stream %d's last token alone", sp.s), alone, row(y, off+sp.n-1))
		off += sp.n
	}
}

// TestAttentionEmulated runs the tensor-core attention (attn.cuh) on the
// CPU emulator: a stream whose new tokens cross a chunk boundary (positions
// 500..529), a prompt from position 0, and a single token deep in a long
// stream, with GQA (4 query heads, 2 key-value heads) and shuffled blocks.
func TestAttentionEmulated(t *testing.T) {
	bin := mmaEmulator(t)
	r := rand.New(rand.NewPCG(9, 9))
	c := newAttnCase(r, 4, 2, 16, []int{530, 20, 700})
	spans := []span{{0, 500, 30}, {1, 0, 20}, {2, 699, 1}}
	checkAttention(t, c, spans, func(spans []span, splits int) []float32 { return emuAttention(t, bin, c, spans, splits) })
}
