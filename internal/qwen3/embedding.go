package qwen3

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Embedding maps a token id to its row of the embedding table, widened to
// float32. A token needs one row, so the table stays in its stored dtype.
type Embedding interface {
	// Lookup writes row id into dst (len(dst) = hidden size). The caller
	// has checked 0 <= id < Rows().
	Lookup(dst []float32, id int)
	Rows() int
}

var _ Embedding = (*DenseEmbedding)(nil)

// DenseEmbedding is an embedding table in F32, BF16 or F16.
type DenseEmbedding struct {
	dtype  safetensors.DType
	f32    []float32
	u16    []uint16
	rows   int
	hidden int
}

// EmbeddingLoader builds the token embedding stored under name with shape
// [rows][hidden].
type EmbeddingLoader func(src Source, name string, rows, hidden int) (Embedding, error)

// LoadDenseEmbedding views the stored table without copying.
func LoadDenseEmbedding(src Source, name string, rows, hidden int) (Embedding, error) {
	t, err := tensorWithShape(src, name, rows, hidden)
	if err != nil {
		return nil, err
	}
	e := &DenseEmbedding{dtype: t.DType, rows: rows, hidden: hidden}
	switch t.DType {
	case safetensors.F32:
		e.f32, err = t.F32()
	case safetensors.BF16, safetensors.F16:
		e.u16, err = t.U16()
	default:
		return nil, fmt.Errorf("tensor %q: dtype %s is not supported for the embedding (want F32, BF16 or F16)", name, t.DType)
	}
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return e, nil
}

// Lookup implements [Embedding].
func (e *DenseEmbedding) Lookup(dst []float32, id int) {
	o := id * e.hidden
	switch e.dtype {
	case safetensors.F32:
		copy(dst[:e.hidden], e.f32[o:o+e.hidden])
	case safetensors.BF16:
		half.BF16SliceToF32(dst, e.u16[o:o+e.hidden])
	default:
		kernels.F16ToF32(dst, e.u16[o:o+e.hidden])
	}
}

// Rows implements [Embedding].
func (e *DenseEmbedding) Rows() int { return e.rows }

// BF16 is the table's raw bfloat16 bits, [rows][hidden], when it is stored
// as bf16 (for backends that upload it as is).
func (e *DenseEmbedding) BF16() ([]uint16, bool) {
	return e.u16, e.dtype == safetensors.BF16
}

// F16 is the table's raw float16 bits when it is stored as f16.
func (e *DenseEmbedding) F16() ([]uint16, bool) {
	return e.u16, e.dtype == safetensors.F16
}
