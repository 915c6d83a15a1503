package qwen3

import (
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

var _ Linear = (*AWQLinear)(nil)

// AWQLinear is an AWQ INT4 projection repacked for the integer kernels at
// load time. Activations are quantized to int8 per weight group for the
// dot products (see [kernels.MatMulInt4]).
type AWQLinear struct {
	W    *kernels.Int4Matrix
	Bias []float32 // nil when the projection has none

	// Where the projection was read from, for Source.
	src    Source
	prefix string
}

// Source reads the projection's AutoAWQ GEMM tensors again from the
// checkpoint, for a backend that repacks them its own way: qweight
// [in][out/8], qzeros [in/group][out/8] (nil: the symmetric variant, zero
// point 8), scales [in/group][out] as float16 bits, and the group size. The
// checkpoint must still be open.
func (l *AWQLinear) Source() (qweight, qzeros []int32, scales []uint16, group int, err error) {
	if l.src == nil {
		return nil, nil, nil, 0, fmt.Errorf("AWQ projection built in memory: no checkpoint to read")
	}
	r, err := readAWQ(l.src, l.prefix, l.W.N, l.W.K, l.W.Group)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	return r.parts.QWeight, r.parts.QZeros, r.parts.Scales, l.W.Group, nil
}

// Forward implements [Linear].
func (l *AWQLinear) Forward(dst, x []float32, T int) {
	kernels.MatMulInt4(dst, x, l.W, T)
	if l.Bias == nil {
		return
	}
	N := l.W.N
	for t := range T {
		row := dst[t*N : (t+1)*N]
		for n, b := range l.Bias {
			row[n] += b
		}
	}
}

// Dims implements [Linear].
func (l *AWQLinear) Dims() (int, int) { return l.W.N, l.W.K }

// NewAWQLoader returns the [LinearLoader] of an AWQ GEMM checkpoint with
// quantization config q. A projection named by modules_to_not_convert (by
// substring, as AutoAWQ and vLLM match) or stored without a qweight is read
// as a plain weight with [DenseLinear]; the others need qweight, scales,
// optionally qzeros (absent means the symmetric variant, zero point 8) and
// optionally a bias.
//
// When src can list its tensors (a safetensors folder), every quantized
// projection is repacked here, on kernels.Threads() goroutines: repacking
// is the bulk of an AWQ load and layers are independent. The loader then
// still reads and checks each projection's tensors through the source Load
// hands it (so they count as used and errors name them) and reuses the
// repacked matrix. Pass Load the same src.
func NewAWQLoader(src Source, q *config.Quantization) LinearLoader {
	var group int // without a config every quantized projection is refused
	var skip []string
	if q != nil {
		group, skip = q.GroupSize, q.ModulesToNotConvert
	}
	return awqLoader(group, skip, prepackAWQ(src, group, skip))
}

// awqLoader is the loader of NewAWQLoader over the projections already
// repacked in pre.
func awqLoader(group int, skip []string, pre map[string]*kernels.Int4Matrix) LinearLoader {
	return func(s Source, prefix string, out, in int) (Linear, error) {
		if notConverted(prefix, skip) || !s.Has(prefix+".qweight") {
			return DenseLinear(s, prefix, out, in)
		}
		return loadAWQ(s, prefix, out, in, group, pre[prefix])
	}
}

// awqSourceLoader is the loader of an UploadOnly model: each quantized
// projection's tensors are read and checked as by NewAWQLoader's, and the
// projection keeps only its shape and where it was read (AWQLinear.Source).
func awqSourceLoader(group int, skip []string) LinearLoader {
	return func(s Source, prefix string, out, in int) (Linear, error) {
		if notConverted(prefix, skip) || !s.Has(prefix+".qweight") {
			return DenseLinear(s, prefix, out, in)
		}
		r, err := readAWQ(s, prefix, out, in, group)
		if err != nil {
			return nil, err
		}
		return &AWQLinear{W: &kernels.Int4Matrix{K: in, N: out, Group: group}, Bias: r.bias, src: s, prefix: prefix}, nil
	}
}

// notConverted applies modules_to_not_convert: any entry that is a
// substring of the module path keeps it unquantized.
func notConverted(module string, skip []string) bool {
	for _, m := range skip {
		if m != "" && strings.Contains(module, m) {
			return true
		}
	}
	return false
}

// prepackAWQ repacks every quantized projection src lists, in parallel.
// Projections that fail are left out: the loader repeats the work for them
// and reports the error against the model's expected shapes.
func prepackAWQ(src Source, group int, skip []string) map[string]*kernels.Int4Matrix {
	return prepackUnits(src, fusionUnits(quantizedPrefixes(src, skip)), group)
}

// prepackUnits repacks the units (fusionUnits) in parallel.
func prepackUnits(src Source, units [][]string, group int) map[string]*kernels.Int4Matrix {
	mats := make([][]*kernels.Int4Matrix, len(units))
	kernels.ParallelFor(len(units), kernels.Threads(), func(_, i int) {
		mats[i] = prepackUnit(src, units[i], group)
	})
	pre := make(map[string]*kernels.Int4Matrix)
	for i, u := range units {
		for j, p := range u {
			if mats[i][j] != nil {
				pre[p] = mats[i][j]
			}
		}
	}
	return pre
}

// fusionUnits groups the quantized projections: the members of a set that
// the engine runs as one product (fusedSets, under one prefix), in the set's
// order, become one unit so that they are repacked into one allocation
// which fuseProjections then joins without copying; every other projection
// is a unit of its own.
func fusionUnits(prefixes []string) [][]string {
	have := make(map[string]bool, len(prefixes))
	for _, p := range prefixes {
		have[p] = true
	}
	used := map[string]bool{}
	var units [][]string
	for _, p := range prefixes {
		for _, set := range fusedSets {
			base, ok := strings.CutSuffix(p, set[0])
			if !ok {
				continue
			}
			unit := make([]string, len(set))
			for i, m := range set {
				unit[i] = base + m
				if !have[unit[i]] {
					unit = nil
					break
				}
			}
			if unit != nil {
				units = append(units, unit)
				for _, m := range unit {
					used[m] = true
				}
			}
		}
	}
	for _, p := range prefixes {
		if !used[p] {
			units = append(units, []string{p})
		}
	}
	return units
}

// prepackUnit repacks the projections of one unit (nil for those that
// fail: the loader repeats the work and reports the error). A set is
// repacked into one allocation when its members can be fused (same inputs,
// no bias, whole blocks of outputs), else one by one.
func prepackUnit(src Source, unit []string, group int) []*kernels.Int4Matrix {
	reads := readUnit(src, unit, group)
	fusible := len(unit) > 1
	for i, r := range reads {
		if r == nil || r.bias != nil || r.parts.K != reads[0].parts.K || (i < len(unit)-1 && r.parts.N%16 != 0) {
			fusible = false
			break
		}
	}
	if fusible {
		parts := make([]kernels.AWQParts, len(unit))
		for i, r := range reads {
			parts[i] = r.parts
		}
		if ms, err := kernels.RepackAWQStacked(parts, group); err == nil {
			releaseReads(reads)
			return ms
		}
	}
	out := make([]*kernels.Int4Matrix, len(unit))
	for i, r := range reads {
		if r == nil {
			continue
		}
		if m, err := kernels.RepackAWQ(r.parts.QWeight, r.parts.QZeros, r.parts.Scales, r.parts.K, r.parts.N, group); err == nil {
			out[i] = m
			releaseMapped(r.tensors...)
		}
	}
	return out
}

// readUnit reads and checks the tensors of each projection of a unit, at
// the shapes its qweight and scales give; a projection that fails is nil
// (the loader reads it again and reports the error against the model's
// expected shapes).
func readUnit(src Source, unit []string, group int) []*awqRead {
	reads := make([]*awqRead, len(unit))
	for i, p := range unit {
		qw, err := src.Tensor(p + ".qweight")
		if err != nil || len(qw.Shape) != 2 {
			continue
		}
		sc, err := src.Tensor(p + ".scales")
		if err != nil || len(sc.Shape) != 2 {
			continue
		}
		reads[i], _ = readAWQ(src, p, sc.Shape[1], qw.Shape[0], group)
	}
	return reads
}

// releaseReads releases the mapped tensors of repacked projections.
func releaseReads(reads []*awqRead) {
	for _, r := range reads {
		releaseMapped(r.tensors...)
	}
}

// awqRead is one quantized projection's checked tensors.
type awqRead struct {
	parts   kernels.AWQParts
	bias    []float32
	tensors []*safetensors.Tensor // the mapped ones, released after repacking
}

// readAWQ reads and checks the tensors of the quantized projection prefix
// with out outputs and in inputs.
func readAWQ(src Source, prefix string, out, in, group int) (*awqRead, error) {
	qwName, qzName, scName := prefix+".qweight", prefix+".qzeros", prefix+".scales"
	if out%8 != 0 {
		return nil, fmt.Errorf("tensor %q: %d outputs is not a multiple of 8, which AWQ GEMM packing needs", qwName, out)
	}
	if group <= 0 || in%group != 0 {
		return nil, fmt.Errorf("tensor %q: quantization_config.group_size %d does not divide its %d inputs", qwName, group, in)
	}
	groups := in / group
	qwT, err := tensorWithShape(src, qwName, in, out/8)
	if err != nil {
		return nil, err
	}
	r := &awqRead{parts: kernels.AWQParts{K: in, N: out}, tensors: []*safetensors.Tensor{qwT}}
	if r.parts.QWeight, err = qwT.I32(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", qwName, err)
	}
	if src.Has(qzName) {
		qzT, err := tensorWithShape(src, qzName, groups, out/8)
		if err != nil {
			return nil, err
		}
		if r.parts.QZeros, err = qzT.I32(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", qzName, err)
		}
		r.tensors = append(r.tensors, qzT)
	}
	scT, err := tensorWithShape(src, scName, groups, out)
	if err != nil {
		return nil, err
	}
	if scT.DType != safetensors.F16 {
		return nil, fmt.Errorf("tensor %q: dtype %s, want F16", scName, scT.DType)
	}
	if r.parts.Scales, err = scT.U16(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", scName, err)
	}
	r.tensors = append(r.tensors, scT)
	if src.Has(prefix + ".bias") {
		if r.bias, err = vectorF32(src, prefix+".bias", out); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// loadAWQ reads and checks the tensors of the quantized projection prefix
// with out outputs and in inputs; packed, when it has those dimensions, is
// its already repacked weight.
func loadAWQ(src Source, prefix string, out, in, group int, packed *kernels.Int4Matrix) (Linear, error) {
	r, err := readAWQ(src, prefix, out, in, group)
	if err != nil {
		return nil, err
	}
	l := &AWQLinear{Bias: r.bias, src: src, prefix: prefix}
	if packed != nil && packed.K == in && packed.N == out && packed.Group == group {
		l.W = packed
		return l, nil
	}
	p := r.parts
	if l.W, err = kernels.RepackAWQ(p.QWeight, p.QZeros, p.Scales, in, out, group); err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	releaseMapped(r.tensors...)
	return l, nil
}
