package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"unsafe"

	"github.com/streamguard/streamguard/internal/half"
)

// Tensor is one tensor's description and bytes. Tensors returned by
// [File.Tensor] view the file's read-only mapping: Data must not be
// written and is valid until the file is closed.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte // little-endian elements, row-major
	File  string // path of the file it came from; empty for a built tensor
	// Source, for a tensor of a file, reads the same bytes from the file
	// itself, Data[0] at offset At: for a reader of small scattered parts
	// (an embedding row a token), which through the mapping would map a
	// whole folio of the page cache each, up to 2 MiB (docs/BENCHMARKS.md).
	Source io.ReaderAt
	At     int64
}

// Numel is the number of elements (1 for a scalar).
func (t *Tensor) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// F32 returns the elements of an F32 tensor. On a little-endian host with
// aligned data the slice aliases Data (read-only); otherwise it is a copy.
func (t *Tensor) F32() ([]float32, error) {
	if err := t.want(F32); err != nil {
		return nil, err
	}
	return view(t, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) })
}

// U16 returns the raw 16-bit patterns of a BF16, F16 or U16 tensor, aliasing
// Data when possible (see [Tensor.F32]).
func (t *Tensor) U16() ([]uint16, error) {
	if err := t.want(BF16, F16, U16); err != nil {
		return nil, err
	}
	return view(t, binary.LittleEndian.Uint16)
}

// I32 returns the elements of an I32 tensor, aliasing Data when possible.
func (t *Tensor) I32() ([]int32, error) {
	if err := t.want(I32); err != nil {
		return nil, err
	}
	return view(t, func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) })
}

// I64 returns the elements of an I64 tensor, aliasing Data when possible.
func (t *Tensor) I64() ([]int64, error) {
	if err := t.want(I64); err != nil {
		return nil, err
	}
	return view(t, func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) })
}

// I8 returns the elements of an I8 tensor; always aliases Data.
func (t *Tensor) I8() ([]int8, error) {
	if err := t.want(I8); err != nil {
		return nil, err
	}
	return view(t, func(b []byte) int8 { return int8(b[0]) })
}

// U8 returns the elements of a U8 tensor: Data itself.
func (t *Tensor) U8() ([]uint8, error) {
	if err := t.want(U8); err != nil {
		return nil, err
	}
	return t.Data, nil
}

// Float32s converts an F32, F16 or BF16 tensor into a new float32 slice
// that the caller owns.
func (t *Tensor) Float32s() ([]float32, error) {
	if err := t.want(F32, F16, BF16); err != nil {
		return nil, err
	}
	switch t.DType {
	case F32:
		v, err := t.F32()
		if err != nil {
			return nil, err
		}
		return append([]float32{}, v...), nil
	default:
		bits, err := t.U16()
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(bits))
		if t.DType == BF16 {
			half.BF16SliceToF32(out, bits)
		} else {
			half.F16SliceToF32(out, bits)
		}
		return out, nil
	}
}

func (t *Tensor) want(ds ...DType) error {
	for _, d := range ds {
		if t.DType == d {
			return nil
		}
	}
	w := string(ds[0])
	for _, d := range ds[1:] {
		w += " or " + string(d)
	}
	return &Error{File: t.File, Tensor: t.Name, Msg: fmt.Sprintf("dtype is %s, want %s", t.DType, w)}
}

// hostLittleEndian gates reinterpretation: safetensors bytes are
// little-endian, so on a big-endian host every view decodes instead.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

type element interface {
	~int8 | ~uint8 | ~int16 | ~uint16 | ~int32 | ~uint32 | ~int64 | ~uint64 | ~float32 | ~float64
}

// view reinterprets t.Data as []T in place when the host byte order and the
// address allow it, and decodes a copy with dec otherwise.
func view[T element](t *Tensor, dec func([]byte) T) ([]T, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	b := t.Data
	if len(b)%size != 0 {
		return nil, &Error{File: t.File, Tensor: t.Name, Msg: fmt.Sprintf("%d data bytes is not a whole number of %d-byte %s elements", len(b), size, t.DType)}
	}
	n := len(b) / size
	if n == 0 {
		return []T{}, nil
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if hostLittleEndian && uintptr(p)%unsafe.Alignof(zero) == 0 {
		return unsafe.Slice((*T)(p), n), nil
	}
	out := make([]T, n)
	for i := range out {
		out[i] = dec(b[i*size:])
	}
	return out, nil
}
