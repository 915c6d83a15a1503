package qwen3

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// AWQ tolerances. The int4 kernels turn each token's activations into a
// coarse int8 row and an int8 residual row per weight group (see
// kernels.MatMulInt4), which reproduce the activations to about 1.6e-5 of
// each group's largest magnitude. End to end on the tiny model (no outlier
// channels) the hidden states then stay within 1.8e-4 (per position) and
// 1e-4 (per sequence) of the dequantized-F32 forward, and every head
// argmax agrees. The bounds keep a tenfold margin, and are ten times
// tighter than the acceptance target (2e-2, 99% argmax):
//   - per position hidden relative L2 <= 2e-3, over a sequence <= 1e-3;
//   - head argmax (all four heads) equal on >= 99% of positions, and
//     every disagreement a near-tie (reference margin below 0.01).
const (
	awqHiddenTol   = 2e-3
	awqSequenceTol = 1e-3
	awqArgmaxAgree = 0.99
	awqFlipMargin  = 0.01
)

// awqStats accumulates the comparison of AWQ outputs with a reference.
type awqStats struct {
	worstPos, worstSeq, worstFlip float64
	heads, same, positions        int
}

// sequence compares one sequence's hidden states and head logits (got)
// with the reference's (want), position by position.
func (s *awqStats) sequence(t *testing.T, name string, got Output, want [][][]float64) {
	t.Helper()
	var num, den float64
	for p := range got.Hidden {
		s.positions++
		e := relL2(got.Hidden[p], want[0][p])
		s.worstPos = max(s.worstPos, e)
		if e > awqHiddenTol {
			t.Errorf("%s position %d: hidden relative L2 %.3g > %g", name, p, e, awqHiddenTol)
		}
		for i, v := range want[0][p] {
			d := float64(got.Hidden[p][i]) - v
			num, den = num+d*d, den+v*v
		}
		for h, g := range [][]float32{got.Risk[p], got.Category[p], got.QueryRisk[p], got.QueryCategory[p]} {
			w := want[1+h][p]
			s.heads++
			ga, wa := argmax32(g), argmax64(w)
			if ga == wa {
				s.same++
				continue
			}
			m := w[wa] - w[ga]
			s.worstFlip = max(s.worstFlip, m)
			if m >= awqFlipMargin {
				t.Errorf("%s position %d head %d: argmax %d, reference %d with a margin of %.3g", name, p, h, ga, wa, m)
			}
		}
	}
	e := math.Sqrt(num / den)
	s.worstSeq = max(s.worstSeq, e)
	if e > awqSequenceTol {
		t.Errorf("%s: hidden relative L2 over the sequence %.3g > %g", name, e, awqSequenceTol)
	}
}

func (s *awqStats) finish(t *testing.T) {
	t.Helper()
	if float64(s.same) < awqArgmaxAgree*float64(s.heads) {
		t.Errorf("head argmax agrees on %d of %d, want at least %.0f%%", s.same, s.heads, 100*awqArgmaxAgree)
	}
	t.Logf("%d positions: worst hidden relative L2 %.4g per position, %.4g per sequence; head argmax agrees %d/%d (%.2f%%), largest reference margin at a disagreement %.3g",
		s.positions, s.worstPos, s.worstSeq, s.same, s.heads, 100*float64(s.same)/float64(s.heads), s.worstFlip)
}

type awqTiny struct {
	dir string
	cfg *config.Config
	set *Weights
	m   *Model
}

// tinyAWQ generates `gen-model --preset tiny --dtype awq --seed 1` and
// loads it with the AWQ loader.
func tinyAWQ(t *testing.T) *awqTiny {
	t.Helper()
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, set, err := OpenFolder(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	cfg := m.Config
	return &awqTiny{dir: dir, cfg: cfg, set: set, m: m}
}

func TestAWQLinearsAreQuantized(t *testing.T) {
	a := tinyAWQ(t)
	if _, ok := a.m.Layers[0].MLP.Down.(*AWQLinear); !ok {
		t.Errorf("down_proj loaded as %T, want *AWQLinear", a.m.Layers[0].MLP.Down)
	}
	if _, ok := a.m.Layers[1].Attn.K.(*AWQLinear); !ok {
		t.Errorf("k_proj loaded as %T, want *AWQLinear", a.m.Layers[1].Attn.K)
	}
	// 2 layers × 7 projections repacked up front.
	if pre := prepackAWQ(a.set, a.cfg.QuantizationConfig.GroupSize, a.cfg.QuantizationConfig.ModulesToNotConvert); len(pre) != 14 {
		t.Errorf("prepacked %d projections, want 14", len(pre))
	}
	// The guard heads are modules_to_not_convert: plain fp16.
	if _, ok := a.m.Response.Pre.(*F16Linear); !ok {
		t.Errorf("head pre loaded as %T, want *F16Linear", a.m.Response.Pre)
	}
	if e, ok := a.m.Embed.(*DenseEmbedding); !ok || e.dtype != safetensors.F16 {
		t.Errorf("embedding %T, want an fp16 DenseEmbedding", a.m.Embed)
	}
}

// TestAWQGolden compares the AWQ forward with the float64 reference run on
// the exactly dequantized weights with float activations.
func TestAWQGolden(t *testing.T) {
	g := readGolden(t, filepath.Join("..", "..", "testdata", "golden", "tiny-awq-seed1.json.gz"))
	a := tinyAWQ(t)
	for name, want := range g.Model.SHA256 {
		if got := fileSHA256(t, filepath.Join(a.dir, name)); got != want {
			t.Fatalf("gen-model wrote %s with sha256 %s, the golden was made from %s: regenerate the goldens", name, got, want)
		}
	}
	var st awqStats
	for _, c := range g.Cases {
		outs, err := a.m.Forward([]Sequence{{Cache: a.m.NewCache(), IDs: c.IDs}}, ForwardOptions{Hidden: true})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		st.sequence(t, c.Name, outs[0], [][][]float64{c.Hidden, c.Risk, c.Category, c.QueryRisk, c.QueryCategory})
	}
	st.finish(t)
}

// dequantizedSource replaces every quantized projection of src by its F32
// dequantization (plain .weight); everything else is kept as stored. With
// symmetric, the qzeros are dropped from the AWQ side (z = 8 implied) and
// the dequantization uses 8.
func dequantizedSource(t *testing.T, src *safetensors.Set, group int, symmetric bool) (quant, dense MapSource) {
	t.Helper()
	quant, dense = MapSource{}, MapSource{}
	for _, name := range src.Names() {
		tn, err := src.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		p, isQ := strings.CutSuffix(name, ".qweight")
		switch {
		case strings.HasSuffix(name, ".qzeros"):
			if !symmetric {
				quant[name] = tn
			}
			continue
		case strings.HasSuffix(name, ".scales"):
			quant[name] = tn
			continue
		case !isQ:
			quant[name], dense[name] = tn, tn
			continue
		}
		quant[name] = tn
		qw, _ := tn.I32()
		K, N := tn.Shape[0], tn.Shape[1]*8
		var qz []int32
		if symmetric {
			qz = make([]int32, K/group*N/8)
			for i := range qz {
				qz[i] = int32(-0x77777778) // 0x88888888: every nibble 8
			}
		} else {
			z, err := src.Tensor(p + ".qzeros")
			if err != nil {
				t.Fatal(err)
			}
			qz, _ = z.I32()
		}
		s, err := src.Tensor(p + ".scales")
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := s.U16()
		w, err := awq.Dequantize(qw, qz, sc, K, N, group)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data := make([]byte, 4*len(w))
		for i, v := range w {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
		dense[p+".weight"] = &safetensors.Tensor{Name: p + ".weight", DType: safetensors.F32, Shape: []int{N, K}, Data: data}
	}
	return quant, dense
}

// TestAWQMatchesDequantized runs the AWQ model and an F32 model built from
// the same weights dequantized; they differ only by the int8 activation
// quantization of the int4 kernels (tolerances above). The symmetric case
// drops qzeros, which must mean zero point 8.
func TestAWQMatchesDequantized(t *testing.T) {
	a := tinyAWQ(t)
	group := a.cfg.QuantizationConfig.GroupSize
	for _, symmetric := range []bool{false, true} {
		name := "zero_point"
		if symmetric {
			name = "symmetric"
		}
		t.Run(name, func(t *testing.T) {
			quant, dense := dequantizedSource(t, a.set.Set, group, symmetric)
			qm, err := Load(quant, a.cfg, Options{Linear: NewAWQLoader(quant, a.cfg.QuantizationConfig)})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := qm.Layers[0].Attn.Q.(*AWQLinear); !ok {
				t.Fatalf("q_proj loaded as %T", qm.Layers[0].Attn.Q)
			}
			dm, err := Load(dense, a.cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := dm.Layers[0].Attn.Q.(*F32Linear); !ok {
				t.Fatalf("dequantized q_proj loaded as %T", dm.Layers[0].Attn.Q)
			}
			var st awqStats
			for salt := range 4 {
				ids := testIDs(50, 100+salt)
				qo, err := qm.Forward([]Sequence{{Cache: qm.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
				if err != nil {
					t.Fatal(err)
				}
				do, err := dm.Forward([]Sequence{{Cache: dm.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
				if err != nil {
					t.Fatal(err)
				}
				d := do[0]
				st.sequence(t, "ids "+strconv.Itoa(salt), qo[0], [][][]float64{widen2(d.Hidden), widen2(d.Risk), widen2(d.Category), widen2(d.QueryRisk), widen2(d.QueryCategory)})
			}
			st.finish(t)
		})
	}
}

func widen2(v [][]float32) [][]float64 {
	w := make([][]float64, len(v))
	for i, r := range v {
		w[i] = widen(r)
	}
	return w
}

func widen(v []float32) []float64 {
	w := make([]float64, len(v))
	for i, x := range v {
		w[i] = float64(x)
	}
	return w
}

// TestAWQChunkingAndBatchAreBitwiseInvariant: the int4 kernels quantize
// activations per token, so a row's result must not depend on how many
// tokens or sequences share the call.
func TestAWQChunkingAndBatchAreBitwiseInvariant(t *testing.T) {
	m := tinyAWQ(t).m
	for _, kv := range kvTypes {
		t.Run(kv.String(), func(t *testing.T) {
			requireChunkingInvariant(t, m, kv, testIDs(41, 7), []int{1, 3, 4, 5, 16})
			requireBatchInvariant(t, m, kv)
		})
	}
}

// TestAWQLoadErrorsNameTheTensor breaks one projection at a time.
func TestAWQLoadErrorsNameTheTensor(t *testing.T) {
	a := tinyAWQ(t)
	const p = "model.layers.1.mlp.down_proj"
	base := func() MapSource {
		m := MapSource{}
		for _, n := range a.set.Names() {
			tn, err := a.set.Tensor(n)
			if err != nil {
				t.Fatal(err)
			}
			m[n] = tn
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		break_ func(MapSource)
		want   string
	}{
		{"qweight shape", func(m MapSource) {
			q := *m[p+".qweight"]
			q.Shape = []int{q.Shape[1], q.Shape[0]}
			m[p+".qweight"] = &q
		}, `tensor "` + p + `.qweight" has shape [8 128], want [128 8]`},
		{"missing scales", func(m MapSource) { delete(m, p+".scales") }, `tensor "` + p + `.scales" is missing`},
		{"qzeros shape", func(m MapSource) {
			q := *m[p+".qzeros"]
			q.Shape = []int{1, q.Numel()}
			m[p+".qzeros"] = &q
		}, `tensor "` + p + `.qzeros" has shape`},
		{"scales dtype", func(m MapSource) {
			s := *m[p+".scales"]
			s.DType = safetensors.BF16
			m[p+".scales"] = &s
		}, `tensor "` + p + `.scales": dtype BF16, want F16`},
		{"qweight dtype", func(m MapSource) {
			s := *m[p+".qweight"]
			s.DType = safetensors.U32
			m[p+".qweight"] = &s
		}, p + ".qweight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := base()
			tc.break_(src)
			_, err := Load(src, a.cfg, Options{Linear: NewAWQLoader(src, a.cfg.QuantizationConfig)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAWQBias: a bias is added to every row after the matmul.
func TestAWQBias(t *testing.T) {
	a := tinyAWQ(t)
	const p = "model.layers.0.self_attn.o_proj"
	src := MapSource{}
	for _, n := range a.set.Names() {
		if strings.HasPrefix(n, p+".") {
			src[n], _ = a.set.Tensor(n)
		}
	}
	out, in := a.m.hidden, a.m.qDim
	plain, err := NewAWQLoader(src, a.cfg.QuantizationConfig)(src, p, out, in)
	if err != nil {
		t.Fatal(err)
	}
	bias := make([]byte, 2*out)
	for i := range out {
		binary.LittleEndian.PutUint16(bias[2*i:], 0x3c00+uint16(i%4)<<8) // f16 1, 1.25, 1.5, 1.75
	}
	src[p+".bias"] = &safetensors.Tensor{Name: p + ".bias", DType: safetensors.F16, Shape: []int{out}, Data: bias}
	biased, err := NewAWQLoader(src, a.cfg.QuantizationConfig)(src, p, out, in)
	if err != nil {
		t.Fatal(err)
	}
	const T = 3
	x := make([]float32, T*in)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	y0, y1 := make([]float32, T*out), make([]float32, T*out)
	plain.Forward(y0, x, T)
	biased.Forward(y1, x, T)
	for i := range y0 {
		want := y0[i] + []float32{1, 1.25, 1.5, 1.75}[(i%out)%4]
		if y1[i] != want {
			t.Fatalf("output %d: %v, want %v", i, y1[i], want)
		}
	}
}

// TestAWQFusedProjectionsAreInvisible: q/k/v and gate/up run as stacked
// products; turning the stacking off (the views remain) gives bitwise the
// same logits.
func TestAWQFusedProjectionsAreInvisible(t *testing.T) {
	m := tinyAWQ(t).m
	for i, l := range m.Layers {
		if l.Attn.QKV == nil || l.MLP.GateUp == nil {
			t.Fatalf("layer %d: projections not stacked", i)
		}
	}
	ids := testIDs(23, 5)
	fused, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		l.Attn.QKV, l.MLP.GateUp = nil, nil
	}
	apart, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	for p := range ids {
		for i, v := range fused[0].Hidden[p] {
			if math.Float32bits(v) != math.Float32bits(apart[0].Hidden[p][i]) {
				t.Fatalf("position %d: hidden[%d] %g stacked, %g apart", p, i, v, apart[0].Hidden[p][i])
			}
		}
	}
}

// TestAWQCoarseMode: coarse int8 activations stay within the looser bounds
// their 1/254 step allows on the tiny model (measured: 4.4% per position,
// 2.4% per sequence, 98.4% argmax; bounds with room), and switching back
// restores the precise results bit for bit.
func TestAWQCoarseMode(t *testing.T) {
	a := tinyAWQ(t)
	group := a.cfg.QuantizationConfig.GroupSize
	_, dense := dequantizedSource(t, a.set.Set, group, false)
	dm, err := Load(dense, a.cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := testIDs(50, 100)
	run := func(m *Model) Output {
		o, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		return o[0]
	}
	precise := run(a.m)
	if !a.m.SetInt4Coarse(true) {
		t.Fatal("SetInt4Coarse found no int4 projections")
	}
	coarse, ref := run(a.m), run(dm)
	a.m.SetInt4Coarse(false)
	again := run(a.m)
	var worst, num, den float64
	same, heads := 0, 0
	for p := range ids {
		worst = max(worst, relL2(coarse.Hidden[p], widen(ref.Hidden[p])))
		for i, v := range ref.Hidden[p] {
			d := float64(coarse.Hidden[p][i] - v)
			num, den = num+d*d, den+float64(v)*float64(v)
			if math.Float32bits(again.Hidden[p][i]) != math.Float32bits(precise.Hidden[p][i]) {
				t.Fatalf("position %d: precise mode not restored", p)
			}
		}
		for h, g := range [][]float32{coarse.Risk[p], coarse.Category[p], coarse.QueryRisk[p], coarse.QueryCategory[p]} {
			w := [][]float32{ref.Risk[p], ref.Category[p], ref.QueryRisk[p], ref.QueryCategory[p]}[h]
			heads++
			if argmax32(g) == argmax32(w) {
				same++
			}
		}
	}
	seq := math.Sqrt(num / den)
	t.Logf("coarse: worst hidden %.4f per position, %.4f per sequence, argmax %d/%d", worst, seq, same, heads)
	if worst > 0.08 || seq > 0.04 || float64(same) < 0.95*float64(heads) {
		t.Fatalf("coarse mode: hidden %.4f per position, %.4f per sequence, argmax %d/%d", worst, seq, same, heads)
	}
	if worst < 1e-3 {
		t.Fatalf("coarse mode moved hidden states by only %.2g: is it on?", worst)
	}
}

// hidingSource is a source without some tensors.
type hidingSource struct {
	Source
	hide string
}

func (h hidingSource) Tensor(name string) (*safetensors.Tensor, error) {
	if name == h.hide {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return h.Source.Tensor(name)
}

func (h hidingSource) Has(name string) bool { return name != h.hide && h.Source.Has(name) }

// TestPrepackUnitFirstMemberMissing: when the first projection of a fused
// set cannot be read, the others are still repacked (one by one) and the
// missing one is left to the loader to report, with no panic.
func TestPrepackUnitFirstMemberMissing(t *testing.T) {
	a := tinyAWQ(t)
	unit := []string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"}
	src := hidingSource{Source: a.set, hide: unit[0] + ".scales"}
	ms := prepackUnit(src, unit, a.cfg.QuantizationConfig.GroupSize)
	if ms[0] != nil || ms[1] == nil || ms[2] == nil {
		t.Fatalf("repacked %v, want q missing and k, v repacked", ms)
	}
	if ms[1].K != a.m.Layers[0].Attn.K.(*AWQLinear).W.K {
		t.Errorf("k_proj repacked with K %d", ms[1].K)
	}
}
