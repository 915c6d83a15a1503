package quantize

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// run is the state of one Quantize call while it walks the layers.
type run struct {
	o     Options
	res   *Result
	cfg   *config.Config
	set   *safetensors.Set
	model *qwen3.Model
	group int
	prog  *progress
	sink  sink

	calib  [][]int   // calibration sequences (AWQ)
	search []int     // lengths of the prefixes of calib that score the scales
	eval   []evalSeq // held-out conversations
	hCalib []float32 // residual stream of the calibration tokens [Tc][H]
	hEval  []float32 // residual stream of the held-out tokens [Te][H]
}

// release drops the mapped pages of source tensors the run is done with.
func (r *run) release(names ...string) {
	for _, n := range names {
		if t, err := r.set.Tensor(n); err == nil {
			releaseMapped(t.Data)
		}
	}
}

// embedding writes model.embed_tokens.weight as fp16, converting chunks
// of rows in parallel.
func (r *run) embedding() error {
	const name = "model.embed_tokens.weight"
	t, err := r.set.Tensor(name)
	if err != nil {
		return err
	}
	if err := r.sink.begin(name); err != nil {
		return err
	}
	n := t.Numel()
	const chunk = 1 << 22 // values per write
	buf := make([]byte, 2*min(n, chunk))
	for lo := 0; lo < n; lo += chunk {
		hi := min(n, lo+chunk)
		out := buf[:2*(hi-lo)]
		var fail firstError
		kernels.ParallelRange(hi-lo, 1024, func(a, b int) {
			if err := toF16(out[2*a:2*b], t, lo+a, lo+b); err != nil {
				fail.set(fmt.Errorf("%s: %w", name, err))
			}
		})
		if err := fail.get(); err != nil {
			return err
		}
		if _, err := r.sink.Write(out); err != nil {
			return err
		}
	}
	releaseMapped(t.Data)
	return nil
}

// toF16 converts elements [lo, hi) of a float tensor to fp16 bytes.
func toF16(dst []byte, t *safetensors.Tensor, lo, hi int) error {
	put := func(i int, h uint16, x float32) error {
		if h&0x7c00 == 0x7c00 {
			return f16Error(lo+i, x)
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
		return nil
	}
	switch t.DType {
	case safetensors.F16:
		v, err := t.U16()
		if err != nil {
			return err
		}
		for i, h := range v[lo:hi] {
			if err := put(i, h, half.F16ToF32(h)); err != nil {
				return err
			}
		}
		return nil
	case safetensors.BF16:
		v, err := t.U16()
		if err != nil {
			return err
		}
		for i, x := range v[lo:hi] {
			// bf16's 7 mantissa bits fit fp16's 10: exact when the
			// exponent is in fp16's normal range.
			var h uint16
			if e := x >> 7 & 0xff; e >= 113 && e <= 142 {
				h = x&0x8000 | (e-112)<<10 | (x&0x7f)<<3
			} else {
				h = f32ToF16(half.BF16ToF32(x))
			}
			if err := put(i, h, half.BF16ToF32(x)); err != nil {
				return err
			}
		}
		return nil
	case safetensors.F32:
		v, err := t.F32()
		if err != nil {
			return err
		}
		for i, x := range v[lo:hi] {
			if err := put(i, f32ToF16(x), x); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("dtype %s is not a float type", t.DType)
}

// initActivations embeds the calibration and held-out tokens.
func (r *run) initActivations() {
	H := r.cfg.HiddenSize
	embed := func(seqs [][]int) []float32 {
		n := 0
		for _, s := range seqs {
			n += len(s)
		}
		h := make([]float32, n*H)
		t := 0
		for _, s := range seqs {
			for _, id := range s {
				r.model.Embed.Lookup(h[t*H:(t+1)*H], id)
				t++
			}
		}
		return h
	}
	r.hCalib = embed(r.calib)
	ev := make([][]int, len(r.eval))
	for i, e := range r.eval {
		ev[i] = e.ids
	}
	r.hEval = embed(ev)
}

// chunks groups consecutive sequences into runs of at most chunkTokens
// tokens (at least one sequence each): [start, end) sequence indices.
func chunks(seqs [][]int) [][2]int {
	var out [][2]int
	for i := 0; i < len(seqs); {
		j, n := i, 0
		for j < len(seqs) && (j == i || n+len(seqs[j]) <= chunkTokens) {
			n += len(seqs[j])
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

func lens(seqs [][]int) []int {
	l := make([]int, len(seqs))
	for i, s := range seqs {
		l[i] = len(s)
	}
	return l
}

// forward runs layer l over the sequences whose residual stream h holds,
// chunk by chunk.
func (r *run) forward(l *qwen3.Layer, seqs [][]int, h []float32) error {
	H := r.cfg.HiddenSize
	t0 := 0
	for _, c := range chunks(seqs) {
		ls := lens(seqs[c[0]:c[1]])
		runner, err := r.model.NewLayerRunner(ls)
		if err != nil {
			return err
		}
		T := runner.Tokens()
		runner.Layer(l, h[t0*H:(t0+T)*H])
		runner.Close()
		t0 += T
	}
	return nil
}

// capture records the input of a Linear on every call, in call order.
type capture struct {
	qwen3.Linear
	buf *[]float32
}

func (c *capture) Forward(dst, x []float32, T int) {
	_, in := c.Linear.Dims()
	*c.buf = append(*c.buf, x[:T*in]...)
	c.Linear.Forward(dst, x, T)
}

// captures are the inputs of a layer's Linears over all calibration
// tokens: attn feeds q/k/v, o feeds o_proj, mlp feeds gate/up, down feeds
// down_proj.
type captures struct{ attn, o, mlp, down []float32 }

// layerWeights is a decoder layer in float32.
type layerWeights struct {
	q, k, v, o, gate, up, down *mat
	ln1, ln2                   []float32 // input_layernorm, post_attention_layernorm
}

func (lw *layerWeights) linears() []*mat {
	return []*mat{lw.q, lw.k, lw.v, lw.o, lw.gate, lw.up, lw.down}
}

func loadLayer(prefix string, l *qwen3.Layer) (*layerWeights, error) {
	lw := &layerWeights{ln1: slices.Clone(l.AttnNorm.W), ln2: slices.Clone(l.MLPNorm.W)}
	for _, x := range []struct {
		dst **mat
		suf string
		lin qwen3.Linear
	}{
		{&lw.q, "self_attn.q_proj", l.Attn.Q}, {&lw.k, "self_attn.k_proj", l.Attn.K},
		{&lw.v, "self_attn.v_proj", l.Attn.V}, {&lw.o, "self_attn.o_proj", l.Attn.O},
		{&lw.gate, "mlp.gate_proj", l.MLP.Gate}, {&lw.up, "mlp.up_proj", l.MLP.Up}, {&lw.down, "mlp.down_proj", l.MLP.Down},
	} {
		m, err := toMat(prefix+x.suf, x.lin)
		if err != nil {
			return nil, err
		}
		*x.dst = m
	}
	return lw, nil
}

// layer processes decoder layer i: forward, search, clip, quantize, write.
func (r *run) layer(i int) (*LayerStats, error) {
	st := &LayerStats{Layer: i}
	start := time.Now()
	prefix := fmt.Sprintf("model.layers.%d.", i)
	src := r.model.Layers[i]
	label := func(what string) { r.prog.set(float64(i), fmt.Sprintf("layer %d/%d %s", i+1, r.res.Layers, what)) }

	label("forward")
	var caps captures
	if len(r.calib) > 0 {
		H, T := r.cfg.HiddenSize, len(r.hCalib)/r.cfg.HiddenSize
		caps.attn = make([]float32, 0, T*H)
		caps.o = make([]float32, 0, T*r.cfg.NumAttentionHeads*r.cfg.HeadDim)
		caps.mlp = make([]float32, 0, T*H)
		caps.down = make([]float32, 0, T*r.cfg.IntermediateSize)
		a, m := src.Attn, src.MLP
		capLayer := &qwen3.Layer{
			AttnNorm: src.AttnNorm,
			Attn: &qwen3.Attention{Q: &capture{a.Q, &caps.attn}, K: a.K, V: a.V, O: &capture{a.O, &caps.o},
				QNorm: a.QNorm, KNorm: a.KNorm, Heads: a.Heads, KVHeads: a.KVHeads, HeadDim: a.HeadDim},
			MLPNorm: src.MLPNorm,
			MLP:     &qwen3.MLP{Gate: &capture{m.Gate, &caps.mlp}, Up: m.Up, Down: &capture{m.Down, &caps.down}, Inter: m.Inter},
		}
		if err := r.forward(capLayer, r.calib, r.hCalib); err != nil {
			return nil, err
		}
	}
	if len(r.eval) > 0 {
		ev := make([][]int, len(r.eval))
		for j, e := range r.eval {
			ev[j] = e.ids
		}
		if err := r.forward(src, ev, r.hEval); err != nil {
			return nil, err
		}
	}
	lw, err := loadLayer(prefix, src)
	if err != nil {
		return nil, err
	}
	st.Forward = time.Since(start).Seconds()

	if r.o.Method == AWQ {
		t := time.Now()
		label("scale search")
		if err := r.searchScales(lw, src, &caps, st); err != nil {
			return nil, err
		}
		st.Search = time.Since(t).Seconds()
		t = time.Now()
		label("clip search")
		if err := r.clipLayer(lw, &caps); err != nil {
			return nil, err
		}
		st.Clip = time.Since(t).Seconds()
	}

	t := time.Now()
	label("quantize")
	out, err := r.encodeLayer(prefix, lw, src)
	if err != nil {
		return nil, err
	}
	if err := r.writeLayer(prefix, out); err != nil {
		return nil, err
	}
	var names []string
	for _, m := range lw.linears() {
		names = append(names, m.name+".weight")
	}
	r.release(append(names, prefix+"input_layernorm.weight", prefix+"post_attention_layernorm.weight",
		prefix+"self_attn.q_norm.weight", prefix+"self_attn.k_norm.weight")...)
	st.Pack = time.Since(t).Seconds()
	st.Seconds = time.Since(start).Seconds()
	return st, nil
}

// encodeLayer quantizes the layer's Linears and encodes every tensor of
// the layer.
func (r *run) encodeLayer(prefix string, lw *layerWeights, src *qwen3.Layer) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, m := range lw.linears() {
		p, err := m.pack(r.group)
		if err != nil {
			return nil, err
		}
		out[m.name+".qweight"] = i32Bytes(p.QWeight)
		out[m.name+".qzeros"] = i32Bytes(p.QZeros)
		out[m.name+".scales"] = u16Bytes(p.Scales)
	}
	for name, v := range map[string][]float32{
		"input_layernorm.weight": lw.ln1, "post_attention_layernorm.weight": lw.ln2,
		"self_attn.q_norm.weight": src.Attn.QNorm.W, "self_attn.k_norm.weight": src.Attn.KNorm.W,
	} {
		b, err := f16Bytes(prefix+name, v)
		if err != nil {
			return nil, err
		}
		out[prefix+name] = b
	}
	return out, nil
}

// writeLayer writes the layer's tensors in declaration order.
func (r *run) writeLayer(prefix string, out map[string][]byte) error {
	bw, ok := r.sink.(*bundleWriter)
	if !ok {
		return nil
	}
	for bw.next < len(bw.specs) && strings.HasPrefix(bw.specs[bw.next].Name, prefix) {
		name := bw.specs[bw.next].Name
		b, ok := out[name]
		if !ok {
			return fmt.Errorf("no data for %s", name)
		}
		if err := bw.tensor(name, b); err != nil {
			return err
		}
		delete(out, name)
	}
	if len(out) > 0 {
		return fmt.Errorf("%d tensors of %s were not declared", len(out), prefix)
	}
	return nil
}

// tail writes model.norm (fp16) and the 8 heads in their source dtype.
func (r *run) tail() error {
	b, err := f16Bytes("model.norm.weight", r.model.Norm.W)
	if err != nil {
		return err
	}
	if err := r.sink.tensor("model.norm.weight", b); err != nil {
		return err
	}
	for _, name := range checkpoint.HeadNames {
		t, err := r.set.Tensor(name)
		if err != nil {
			return err
		}
		// The heads are copied in their dtype, unconverted, so nothing
		// else would see a NaN or infinity in them.
		v, err := t.Float32s()
		if err != nil {
			return err
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("%s: %w", name, f16Error(i, x))
			}
		}
		if err := r.sink.tensor(name, t.Data); err != nil {
			return err
		}
	}
	return nil
}

// meanAbs is the mean |x| per column of x [T][K] (the activation
// statistic of the scale search), accumulated in float64 over fixed
// blocks of rows summed in order, so the result does not depend on the
// number of threads.
func meanAbs(x []float32, K int) []float64 {
	T := len(x) / K
	const block = 128
	nb := (T + block - 1) / block
	parts := make([][]float64, nb)
	kernels.ParallelRange(nb, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			s := make([]float64, K)
			for t := b * block; t < min(T, (b+1)*block); t++ {
				for k, v := range x[t*K : (t+1)*K] {
					s[k] += math.Abs(float64(v))
				}
			}
			parts[b] = s
		}
	})
	out := make([]float64, K)
	for _, s := range parts {
		for k, v := range s {
			out[k] += v
		}
	}
	for k := range out {
		out[k] /= float64(max(T, 1))
	}
	return out
}

// weightMean is w_mean over the rows of all the Linears of a group.
func weightMean(ms []*mat, group int) ([]float64, error) {
	K := ms[0].K
	sum := make([]float64, K)
	rows := 0
	for _, m := range ms {
		if err := awq.WeightMeanAccum(sum, m.W, m.N, m.K, group); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		rows += m.N
	}
	for k := range sum {
		sum[k] /= float64(rows)
	}
	return sum, nil
}

// scaleRows divides every row of x [T][K] by s.
func scaleRows(x []float32, s []float32) {
	K := len(s)
	inv := make([]float32, K)
	for k, v := range s {
		inv[k] = 1 / v
	}
	kernels.ParallelRange(len(x)/K, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row := x[t*K : (t+1)*K]
			for k := range row {
				row[k] *= inv[k]
			}
		}
	})
}
