package gpu

import (
	"fmt"
	"os"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/paging"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// Model is a Qwen3Guard network resident on one GPU: the weights of a CPU
// model (qwen3.Model, memory-mapped from the checkpoint) uploaded as stored,
// and a paged bf16 KV cache shared by every stream.
type Model struct {
	ctx *cuda.Context
	mod *cuda.Module
	k   kernelSet

	Hidden, Heads, KVHeads, HeadDim, Inter, Vocab, MaxPositions int
	layers                                                      []layer
	norm                                                        *cuda.Buffer // f32 [hidden]
	embed                                                       *cuda.Buffer // bf16 [vocab][hidden]
	cos, sin                                                    *cuda.Buffer // f32 [positions][head_dim/2]
	heads                                                       [2]head      // response, query
	eps                                                         float32

	// The paged KV cache: per layer, keys and values of every slot.
	pool   *paging.Pool
	kc, vc []*cuda.Buffer // bf16 [blocks·block_size][kv_heads·head_dim]

	ws     *workspace
	weight int64 // bytes of weights on the GPU

	// Every forward's work goes on stream; steps of a repeated token
	// count replay a graph recorded from graphs (nil when off).
	stream *cuda.Stream
	graphs *graphCache[*cuda.Graph]
	direct bool // launch every kernel even where a graph exists (Bench's baseline)
	stats  GraphStats

	mma         bool // tensor-core products where the shapes fit
	attnMMA     bool // tensor-core attention (attn.cuh)
	projections Projections
}

// GraphStats counts the graphs a model recorded and replayed.
type GraphStats struct {
	On       bool   `json:"on"`
	Recorded int    `json:"recorded"`
	Replayed int    `json:"replayed"`
	Nodes    int    `json:"nodes"`           // kernels in the latest graph
	Err      string `json:"error,omitempty"` // why recording stopped, if it failed
}

// Graphs reports the use of graphs so far.
func (m *Model) Graphs() GraphStats {
	s := m.stats
	s.On = m.graphs != nil
	return s
}

// Graph cache bounds: graphs for steps of up to graphMaxTokens tokens (a
// decode step of that many streams; beyond it the kernels' own time
// dwarfs their launches), at most graphLimit of them.
const (
	graphLimit     = 64
	graphMaxTokens = 512
)

type layer struct {
	attnNorm, mlpNorm, qNorm, kNorm *cuda.Buffer // f32
	q, k, v, o, gate, up, down      *linear
	qkv, gateUp                     *linear // fused (fuse.go), replacing q, k, v and gate, up
}

type head struct {
	pre, risk, cat            *linear
	norm                      *cuda.Buffer // f32
	inner, levels, categories int
}

// Weight formats of a linear.
const (
	fmtBF16 = iota // [N][K] bf16, as stored
	fmtF16         // [N][K] f16, as stored
	fmtAWQ         // AWQ INT4 repacked for matmul_awq
)

// linear is one projection on the GPU.
type linear struct {
	format, n, k, group int
	// mma: the tensor-core products (mma.cuh) and their layouts; else the
	// one-warp-per-row kernels and the layouts as described below.
	mma bool
	w   *cuda.Buffer // the 16-bit matrix, or the AWQ codes
	// AWQ: scales and zs = zero·scale float32 [N][K/group]; with mma,
	// scales float16 [K/group][N] and neg (−(128 + zero) as bf16) instead
	// of zs.
	scales, zs, neg *cuda.Buffer
	bias            *cuda.Buffer // float32 [N], or nil
}

func (l *linear) bufs() []*cuda.Buffer {
	if l == nil {
		return nil
	}
	return []*cuda.Buffer{l.w, l.scales, l.zs, l.neg, l.bias}
}

type kernelSet struct {
	embedBF16, embedF16, rmsnorm              *cuda.Function
	matmulBF16, matmulF16, matmulAWQ, addBias *cuda.Function
	mmaBF16M16, mmaBF16M64, mmaAWQM16         *cuda.Function
	mmaAWQM64, mmaBF16S, mmaAWQS              *cuda.Function
	attnChunk, attnMerge                      *cuda.Function
	siluMul, siluMulRows, add, qkPrep         *cuda.Function
	attention                                 *cuda.Function
	embed                                     *cuda.Function // embedBF16 or embedF16, for this model's table
}

// Options size the KV cache.
type Options struct {
	// BlockSize is the positions per cache block (default 16).
	BlockSize int
	// CacheBytes is the GPU memory the KV cache takes (default: half of
	// what is free after the weights).
	CacheBytes int64
	// NoGraphs launches every kernel of every step directly instead of
	// replaying recorded graphs (also: STREAMGUARD_CUDA_GRAPHS=off).
	NoGraphs bool
	// NoTensorCores keeps every projection on the one-warp-per-row
	// kernels (also: STREAMGUARD_CUDA_TENSOR_CORES=off).
	NoTensorCores bool
}

// Upload copies net's weights to the GPU of ctx and allocates the KV cache:
// bf16 and f16 matrices as stored, AWQ INT4 projections repacked from the
// checkpoint's tensors (which must still be open).
func Upload(ctx *cuda.Context, net *qwen3.Model, opts Options) (*Model, error) {
	info := ctx.Device
	src, err := PTX(info.ComputeMajor, info.ComputeMinor)
	if err != nil {
		return nil, err
	}
	if v, err := cuda.DriverVersion(); err == nil && v < MinDriverVersion {
		return nil, fmt.Errorf("gpu: the NVIDIA driver supports CUDA %d.%d; the kernels need %d.%d or later (driver R520 or later): update the driver",
			v/1000, v%1000/10, MinDriverVersion/1000, MinDriverVersion%1000/10)
	}
	mod, err := ctx.LoadPTX(src)
	if err != nil {
		return nil, fmt.Errorf("gpu: loading the kernels: %w", err)
	}
	m := &Model{ctx: ctx, mod: mod, MaxPositions: net.MaxPositions}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	names := map[string]**cuda.Function{
		"embed_bf16": &m.k.embedBF16, "embed_f16": &m.k.embedF16, "rmsnorm": &m.k.rmsnorm,
		"matmul_bf16": &m.k.matmulBF16, "matmul_f16": &m.k.matmulF16, "matmul_awq": &m.k.matmulAWQ, "add_bias": &m.k.addBias,
		"silu_mul": &m.k.siluMul, "silu_mul_rows": &m.k.siluMulRows, "add_inplace": &m.k.add, "qk_prep": &m.k.qkPrep, "attention": &m.k.attention,
		"mma_bf16_m16": &m.k.mmaBF16M16, "mma_bf16_m64": &m.k.mmaBF16M64, "mma_awq_m16": &m.k.mmaAWQM16, "mma_awq_m64": &m.k.mmaAWQM64, "mma_bf16_s": &m.k.mmaBF16S, "mma_awq_s": &m.k.mmaAWQS,
		"attn_chunk": &m.k.attnChunk, "attn_merge": &m.k.attnMerge,
	}
	m.mma = !opts.NoTensorCores && os.Getenv("STREAMGUARD_CUDA_TENSOR_CORES") != "off"
	for name, dst := range names {
		if *dst, err = mod.Function(name); err != nil {
			return nil, err
		}
	}

	a := net.Layers[0].Attn
	m.Hidden, m.Heads, m.KVHeads, m.HeadDim = net.Hidden(), a.Heads, a.KVHeads, a.HeadDim
	m.Inter, m.Vocab, m.eps = net.Layers[0].MLP.Inter, net.VocabSize(), net.Norm.Eps
	if m.HeadDim > 256 || m.HeadDim%2 != 0 {
		return nil, fmt.Errorf("gpu: head_dim %d (the attention kernel takes even sizes up to 256)", m.HeadDim)
	}
	emb, okE := net.Embed.(*qwen3.DenseEmbedding)
	if !okE {
		return nil, fmt.Errorf("gpu: %T embeddings are not supported", net.Embed)
	}
	if bits, ok := emb.BF16(); ok {
		m.k.embed = m.k.embedBF16
		m.embed, err = m.upload(bits)
	} else if bits, ok := emb.F16(); ok {
		m.k.embed = m.k.embedF16
		m.embed, err = m.upload(bits)
	} else {
		err = fmt.Errorf("gpu: the embedding is float32; the GPU backend takes bf16 or f16 tables")
	}
	if err != nil {
		return nil, err
	}
	for i, l := range net.Layers {
		var g layer
		var fusedQKV, fusedGateUp bool
		if g.qkv, fusedQKV, err = m.fusedLinear(l.Attn.Q, l.Attn.K, l.Attn.V); err != nil {
			return nil, fmt.Errorf("gpu: layer %d q/k/v_proj: %w", i, err)
		}
		if g.gateUp, fusedGateUp, err = m.fusedLinear(l.MLP.Gate, l.MLP.Up); err != nil {
			return nil, fmt.Errorf("gpu: layer %d gate/up_proj: %w", i, err)
		}
		for _, w := range []struct {
			dst   **linear
			lin   qwen3.Linear
			nm    string
			fused bool
		}{{&g.q, l.Attn.Q, "q_proj", fusedQKV}, {&g.k, l.Attn.K, "k_proj", fusedQKV}, {&g.v, l.Attn.V, "v_proj", fusedQKV},
			{&g.o, l.Attn.O, "o_proj", false}, {&g.gate, l.MLP.Gate, "gate_proj", fusedGateUp}, {&g.up, l.MLP.Up, "up_proj", fusedGateUp},
			{&g.down, l.MLP.Down, "down_proj", false}} {
			if w.fused {
				continue
			}
			if *w.dst, err = m.linear(w.lin); err != nil {
				return nil, fmt.Errorf("gpu: layer %d %s: %w", i, w.nm, err)
			}
		}
		for _, n := range []struct {
			dst  *(*cuda.Buffer)
			norm *qwen3.RMSNorm
		}{{&g.attnNorm, l.AttnNorm}, {&g.mlpNorm, l.MLPNorm}, {&g.qNorm, l.Attn.QNorm}, {&g.kNorm, l.Attn.KNorm}} {
			if *n.dst, err = m.upload(n.norm.W); err != nil {
				return nil, err
			}
		}
		m.layers = append(m.layers, g)
	}
	if m.norm, err = m.upload(net.Norm.W); err != nil {
		return nil, err
	}
	for i, h := range []*qwen3.Head{net.Response, net.Query} {
		g := head{levels: h.Levels(), categories: h.Categories()}
		g.inner, _ = h.Pre.Dims()
		if g.pre, err = m.linear(h.Pre); err == nil {
			if g.risk, err = m.linear(h.Risk); err == nil {
				if g.cat, err = m.linear(h.Category); err == nil {
					g.norm, err = m.upload(h.Norm.W)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("gpu: head %d: %w", i, err)
		}
		m.heads[i] = g
	}
	if err := m.uploadRoPE(net.RoPE); err != nil {
		return nil, err
	}
	if err := m.allocCache(opts); err != nil {
		return nil, err
	}
	m.attnMMA = m.mma && attnFits(m.HeadDim, m.pool.BlockSize)
	if m.stream, err = ctx.NewStream(); err != nil {
		return nil, err
	}
	if !opts.NoGraphs && os.Getenv("STREAMGUARD_CUDA_GRAPHS") != "off" && cuda.GraphsSupported() {
		m.graphs = newGraphCache[*cuda.Graph](graphLimit, graphMaxTokens)
	}
	// The weights went through the default stream, which the model's own
	// stream does not wait for.
	if err := ctx.Synchronize(); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// linear uploads a projection: for the tensor-core products, bf16 and AWQ
// INT4 in their fragment layouts (frags.go); otherwise bf16 and f16
// matrices as stored and AWQ INT4 repacked for matmul_awq.
func (m *Model) linear(l qwen3.Linear) (*linear, error) {
	g := &linear{}
	var err error
	switch l := l.(type) {
	case *qwen3.BF16Linear:
		g.format, g.n, g.k = fmtBF16, l.Out, l.In
		if g.mma = m.mma && mmaFits(g.n, g.k, 0); g.mma {
			g.w, err = upload(m, bf16Frags(l.W, g.n, g.k))
		} else {
			g.w, err = m.upload(l.W)
		}
		m.countMMA(g)
	case *qwen3.F16Linear:
		g.format, g.n, g.k = fmtF16, l.Out, l.In
		g.w, err = m.upload(l.W)
	case *qwen3.AWQLinear:
		g.format = fmtAWQ
		g.n, g.k = l.Dims()
		var qw, qz []int32
		var sc []uint16
		if qw, qz, sc, g.group, err = l.Source(); err != nil {
			return nil, err
		}
		if g.mma = m.mma && mmaFits(g.n, g.k, g.group); g.mma {
			w, scales, neg, ferr := awqFragsFromSource(qw, qz, sc, g.k, g.n, g.group)
			if ferr != nil {
				return nil, ferr
			}
			err = m.uploadAWQFrags(g, w, scales, neg)
		} else {
			var r *awqRepacked
			if r, err = repackAWQ(qw, qz, sc, g.k, g.n, g.group); err != nil {
				return nil, err
			}
			if g.w, err = upload(m, r.codes); err == nil {
				if g.scales, err = m.upload(r.scales); err == nil {
					g.zs, err = m.upload(r.zs)
				}
			}
		}
		m.countMMA(g)
		if err == nil && l.Bias != nil {
			g.bias, err = m.upload(l.Bias)
		}
	default:
		return nil, fmt.Errorf("%T weights are not supported on the GPU (bf16, f16 and AWQ INT4 are)", l)
	}
	if err != nil {
		for _, b := range g.bufs() {
			b.Free()
		}
		return nil, err
	}
	return g, nil
}

// uploadAWQFrags puts an AWQ projection laid out for the tensor cores
// (awqFragsFromSource, stackFrags) into g's buffers.
func (m *Model) uploadAWQFrags(g *linear, w []uint32, scales, neg []uint16) (err error) {
	if g.w, err = upload(m, w); err == nil {
		if g.scales, err = upload(m, scales); err == nil {
			g.neg, err = upload(m, neg)
		}
	}
	return err
}

// countMMA counts the projections on each kind of product.
func (m *Model) countMMA(g *linear) {
	if g.mma {
		m.projections.TensorCores++
	} else {
		m.projections.Warps++
	}
}

// Projections counts a model's projections by the kernels that compute
// them.
type Projections struct {
	TensorCores int `json:"tensor_cores"` // mma.cuh
	Warps       int `json:"warps"`        // one warp per output row (f16, and shapes the tiles do not fit)
	// AttentionTensorCores: attn.cuh (heads of 128 dimensions, cache
	// blocks of a multiple of 16 positions), else one block per token and
	// head.
	AttentionTensorCores bool `json:"attention_tensor_cores"`
}

// Products reports which kernels compute the model's projections and
// attention.
func (m *Model) Products() Projections {
	p := m.projections
	p.AttentionTensorCores = m.attnMMA
	return p
}

func upload[T any](m *Model, v []T) (*cuda.Buffer, error) {
	n := int64(len(v)) * int64(sizeOf[T]())
	b, err := m.ctx.Alloc(n)
	if err != nil {
		return nil, err
	}
	if err := cuda.CopyIn(b, 0, v); err != nil {
		b.Free()
		return nil, err
	}
	m.weight += n
	return b, nil
}

func (m *Model) upload(v any) (*cuda.Buffer, error) {
	switch v := v.(type) {
	case []uint16:
		return upload(m, v)
	case []float32:
		return upload(m, v)
	}
	return nil, fmt.Errorf("gpu: cannot upload %T", v)
}

func sizeOf[T any]() int {
	var z T
	switch any(z).(type) {
	case uint16:
		return 2
	case float32, int32, uint32:
		return 4
	}
	panic("gpu: sizeOf")
}

// uploadRoPE copies the cos/sin table of every position, computed on the
// host exactly as the CPU engine computes it.
func (m *Model) uploadRoPE(r *qwen3.RoPE) error {
	half := m.HeadDim / 2
	cos := make([]float32, m.MaxPositions*half)
	sin := make([]float32, m.MaxPositions*half)
	for p := range m.MaxPositions {
		c, s := r.At(p)
		copy(cos[p*half:], c)
		copy(sin[p*half:], s)
	}
	var err error
	if m.cos, err = m.upload(cos); err != nil {
		return err
	}
	m.sin, err = m.upload(sin)
	return err
}

// BytesPerPosition is the KV-cache memory of one position (bf16 keys and
// values of every layer).
func (m *Model) BytesPerPosition() int64 {
	return qwen3.KVBF16.BytesPerPosition(len(m.layers), m.KVHeads, m.HeadDim)
}

func (m *Model) allocCache(opts Options) error {
	bs := opts.BlockSize
	if bs <= 0 {
		bs = 16
	}
	want := opts.CacheBytes
	if want <= 0 {
		free, _, err := m.ctx.MemInfo()
		if err != nil {
			return err
		}
		want = free / 2
	}
	blocks := int(want / (m.BytesPerPosition() * int64(bs)))
	if blocks < 1 {
		return fmt.Errorf("gpu: a KV cache of %d bytes holds no block of %d positions", want, bs)
	}
	var err error
	if m.pool, err = paging.NewPool(blocks, bs); err != nil {
		return err
	}
	per := int64(blocks) * int64(bs) * m.BytesPerPosition() / int64(2*len(m.layers)) // one layer's keys (or values)
	for range m.layers {
		k, err := m.ctx.Alloc(per)
		if err != nil {
			return fmt.Errorf("gpu: KV cache: %w", err)
		}
		m.kc = append(m.kc, k)
		v, err := m.ctx.Alloc(per)
		if err != nil {
			return fmt.Errorf("gpu: KV cache: %w", err)
		}
		m.vc = append(m.vc, v)
	}
	return nil
}

// CacheBlocks reports the KV cache's size and use, in blocks of
// BlockSize positions.
func (m *Model) CacheBlocks() (free, total, blockSize int) {
	return m.pool.Free(), m.pool.Blocks(), m.pool.BlockSize
}

// WeightBytes is the GPU memory the weights take.
func (m *Model) WeightBytes() int64 { return m.weight }

// Close frees the model's GPU memory.
func (m *Model) Close() error {
	bufs := []*cuda.Buffer{m.norm, m.embed, m.cos, m.sin}
	for _, l := range m.layers {
		bufs = append(bufs, l.attnNorm, l.mlpNorm, l.qNorm, l.kNorm)
		for _, w := range []*linear{l.q, l.k, l.v, l.o, l.gate, l.up, l.down, l.qkv, l.gateUp} {
			bufs = append(bufs, w.bufs()...)
		}
	}
	for _, h := range m.heads {
		bufs = append(bufs, h.norm)
		for _, w := range []*linear{h.pre, h.risk, h.cat} {
			bufs = append(bufs, w.bufs()...)
		}
	}
	bufs = append(bufs, m.kc...)
	bufs = append(bufs, m.vc...)
	if m.ws != nil {
		bufs = append(bufs, m.ws.bufs()...)
	}
	first := m.graphs.reset()
	if m.stream != nil {
		if err := m.stream.Synchronize(); err != nil && first == nil {
			first = err
		}
	}
	for _, b := range bufs {
		if err := b.Free(); err != nil && first == nil {
			first = err
		}
	}
	if err := m.stream.Close(); err != nil && first == nil {
		first = err
	}
	if m.mod != nil {
		if err := m.mod.Unload(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
