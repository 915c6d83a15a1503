package qwen3

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Linear is one bias-free projection y = W·x with W of shape [out][in], as
// nn.Linear stores it. Forward computes T rows at once: dst is [T][out], x is
// [T][in]. Implementations must be per-row invariant (row t of dst depends
// only on row t of x, through the same float32 operations for every T) and
// safe for concurrent use.
//
// The dense implementations below keep the checkpoint's dtype; quantized
// formats (AWQ INT4) provide their own Linear through [Options.Linear].
type Linear interface {
	Forward(dst, x []float32, T int)
	// Dims returns (out, in).
	Dims() (out, in int)
}

var (
	_ Linear = (*F32Linear)(nil)
	_ Linear = (*BF16Linear)(nil)
	_ Linear = (*F16Linear)(nil)
)

// F32Linear is a float32 weight matrix.
type F32Linear struct {
	W       []float32
	Out, In int
}

// Forward implements [Linear].
func (l *F32Linear) Forward(dst, x []float32, T int) { kernels.MatMulF32(dst, x, l.W, T, l.In, l.Out) }

// Dims implements [Linear].
func (l *F32Linear) Dims() (int, int) { return l.Out, l.In }

// BF16Linear is a bfloat16 weight matrix (raw bits), typically a view of the
// mapped checkpoint.
type BF16Linear struct {
	W       []uint16
	Out, In int
}

// Forward implements [Linear].
func (l *BF16Linear) Forward(dst, x []float32, T int) {
	kernels.MatMulBF16(dst, x, l.W, T, l.In, l.Out)
}

// Dims implements [Linear].
func (l *BF16Linear) Dims() (int, int) { return l.Out, l.In }

// F16Linear is an IEEE binary16 weight matrix (raw bits).
type F16Linear struct {
	W       []uint16
	Out, In int
}

// Forward implements [Linear].
func (l *F16Linear) Forward(dst, x []float32, T int) { kernels.MatMulF16(dst, x, l.W, T, l.In, l.Out) }

// Dims implements [Linear].
func (l *F16Linear) Dims() (int, int) { return l.Out, l.In }

// LinearLoader builds the projection stored under prefix (for example
// "model.layers.0.mlp.up_proj") with the given shape. It must return an
// error naming the tensor when it is missing or has the wrong shape.
type LinearLoader func(src Source, prefix string, out, in int) (Linear, error)

// DenseLinear loads prefix+".weight" in its stored dtype without copying.
func DenseLinear(src Source, prefix string, out, in int) (Linear, error) {
	t, err := tensorWithShape(src, prefix+".weight", out, in)
	if err != nil {
		return nil, err
	}
	return denseFromTensor(t, out, in)
}

func denseFromTensor(t *safetensors.Tensor, out, in int) (Linear, error) {
	switch t.DType {
	case safetensors.F32:
		w, err := t.F32()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return &F32Linear{W: w, Out: out, In: in}, nil
	case safetensors.BF16, safetensors.F16:
		w, err := t.U16()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if t.DType == safetensors.BF16 {
			return &BF16Linear{W: w, Out: out, In: in}, nil
		}
		return &F16Linear{W: w, Out: out, In: in}, nil
	}
	return nil, fmt.Errorf("tensor %q: dtype %s is not supported for a weight matrix (want F32, BF16 or F16)", t.Name, t.DType)
}
