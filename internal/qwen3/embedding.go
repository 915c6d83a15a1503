package qwen3

import (
	"fmt"
	"io"
	"sync"
	"unsafe"

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
	// src reads the table from its file, row id at at+id·rowBytes; nil
	// for a table in memory. Lookup reads rows with it rather than
	// through the mapping: a token's row mapped through a page cache that
	// holds the file in 2 MiB folios maps the whole folio, and a prompt of
	// 512 different tokens added up to 1 GB resident for an 8B model
	// (docs/BENCHMARKS.md).
	src  io.ReaderAt
	at   int64
	bufs sync.Pool // *[]uint64: a row's bytes, 8-byte aligned for the element views
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
	e := &DenseEmbedding{dtype: t.DType, rows: rows, hidden: hidden, src: t.Source, at: t.At}
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
	if e.src != nil && e.lookupRead(dst, id) {
		return
	}
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

// lookupRead is Lookup through e.src; false when the row could not be read
// that way (then the mapping serves it).
func (e *DenseEmbedding) lookupRead(dst []float32, id int) bool {
	n := e.hidden * e.dtype.Size()
	p, _ := e.bufs.Get().(*[]uint64)
	if p == nil {
		p = new([]uint64)
	}
	defer e.bufs.Put(p)
	if len(*p) < (n+7)/8 {
		*p = make([]uint64, (n+7)/8)
	}
	buf := *p
	b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), n)
	if _, err := e.src.ReadAt(b, e.at+int64(id)*int64(n)); err != nil {
		return false
	}
	switch e.dtype {
	case safetensors.F32:
		copy(dst[:e.hidden], unsafe.Slice((*float32)(unsafe.Pointer(&buf[0])), e.hidden))
	case safetensors.BF16:
		half.BF16SliceToF32(dst, unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), e.hidden))
	default:
		kernels.F16ToF32(dst, unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), e.hidden))
	}
	return true
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
