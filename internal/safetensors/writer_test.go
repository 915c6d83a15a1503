package safetensors

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/streamguard/streamguard/internal/folio"
)

func TestWriterStreaming(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.safetensors")
	big := make([]byte, 3*folio.Chunk+5) // spans several pieces
	for i := range big {
		big[i] = byte(i * 7)
	}
	w, err := Create(p, map[string]string{"format": "pt"}, []TensorSpec{
		{Name: "chunked", DType: U8, Shape: []int{len(big)}},
		{Name: "from_reader", DType: I32, Shape: []int{2, 2}},
		{Name: "empty", DType: F32, Shape: []int{0}},
		{Name: "whole", DType: BF16, Shape: []int{1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.DataSize(); got != int64(len(big))+16+0+2 {
		t.Errorf("DataSize = %d", got)
	}
	if got := w.Tensors()[1]; got.Begin != int64(len(big)) || got.End != int64(len(big))+16 {
		t.Errorf("layout of from_reader = [%d, %d]", got.Begin, got.End)
	}
	if err := w.Begin("chunked"); err != nil {
		t.Fatal(err)
	}
	for rest := big; len(rest) > 0; {
		n := min(len(rest), 65537)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	i32 := le(int32(1), int32(-2), int32(3), int32(-4))
	// OneByteReader makes the copy take many short reads.
	if err := w.WriteTensorFrom("from_reader", iotest.OneByteReader(bytes.NewReader(i32))); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensorFrom("empty", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("whole", []byte{0x80, 0x3f}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, _ := f.Tensor("chunked")
	if !bytes.Equal(c.Data, big) {
		t.Error("chunked data differs")
	}
	r, _ := f.Tensor("from_reader")
	if v, err := r.I32(); err != nil || !slices.Equal(v, []int32{1, -2, 3, -4}) {
		t.Errorf("from_reader = %v, %v", v, err)
	}
	wh, _ := f.Tensor("whole")
	if v, err := wh.Float32s(); err != nil || !slices.Equal(v, []float32{1}) {
		t.Errorf("whole = %v, %v", v, err)
	}
}

// TestHeaderPadding checks that the data buffer starts 8-aligned whatever
// the header length.
func TestHeaderPadding(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 9; n++ {
		p := filepath.Join(dir, "p.safetensors")
		mustWrite(t, p, nil, u8Tensor(strings.Repeat("x", n), 1))
		b, _ := os.ReadFile(p)
		hl := int(b[0])
		if (8+hl)%8 != 0 || b[8+hl-1] != ' ' && b[8+hl-1] != '}' {
			t.Errorf("name length %d: header length %d", n, hl)
		}
		if _, err := ParseHeader(b[8:8+hl], int64(len(b)-8-hl)); err != nil {
			t.Errorf("name length %d: %v", n, err)
		}
	}
}

func TestWriterMisuse(t *testing.T) {
	dir := t.TempDir()
	specs := []TensorSpec{{Name: "a", DType: F32, Shape: []int{2}}, {Name: "b", DType: U8, Shape: []int{3}}}
	open := func(t *testing.T) (*Writer, string) {
		p := filepath.Join(dir, t.Name()[len("TestWriterMisuse/"):]+".safetensors")
		w, err := Create(p, nil, specs)
		if err != nil {
			t.Fatal(err)
		}
		return w, p
	}
	t.Run("out_of_order", func(t *testing.T) {
		w, p := open(t)
		defer w.Close()
		wantErr(t, w.WriteTensor("b", []byte{1, 2, 3}), p, `tensor "b"`, `written out of order: the next tensor is "a"`)
		wantErr(t, w.Begin("zz"), `tensor "zz"`, "out of order")
	})
	t.Run("wrong_size", func(t *testing.T) {
		w, p := open(t)
		defer w.Close()
		wantErr(t, w.WriteTensor("a", make([]byte, 7)), p, `tensor "a"`, "got 7 bytes, want 8 for shape [2] of F32")
		// The failed call changed nothing: a correct retry works.
		if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("write_past_end", func(t *testing.T) {
		w, p := open(t)
		defer w.Close()
		w.Begin("a")
		w.Write(make([]byte, 6))
		_, err := w.Write(make([]byte, 3))
		wantErr(t, err, p, `tensor "a"`, "3 more bytes would exceed its size of 8 (6 written)")
		wantErr(t, w.Begin("b"), `tensor "a"`, `incomplete: 6 of 8 bytes written before starting "b"`)
	})
	t.Run("write_before_begin", func(t *testing.T) {
		w, _ := open(t)
		defer w.Close()
		_, err := w.Write([]byte{1})
		wantErr(t, err, "Write before Begin")
	})
	t.Run("too_many", func(t *testing.T) {
		w, _ := open(t)
		w.WriteTensor("a", make([]byte, 8))
		w.WriteTensor("b", make([]byte, 3))
		wantErr(t, w.Begin("c"), `tensor "c"`, "already been written")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		wantErr(t, w.Close(), "writer is closed")
		wantErr(t, w.WriteTensor("a", nil), "writer is closed")
	})
	t.Run("short_reader", func(t *testing.T) {
		w, p := open(t)
		defer w.Close()
		wantErr(t, w.WriteTensorFrom("a", bytes.NewReader(make([]byte, 5))), p, `tensor "a"`, "reader ended after 5 of 8 bytes")
	})
	t.Run("long_reader", func(t *testing.T) {
		w, _ := open(t)
		defer w.Close()
		wantErr(t, w.WriteTensorFrom("a", bytes.NewReader(make([]byte, 9))), `tensor "a"`, "reader holds more than the tensor's 8 bytes")
	})
	t.Run("failing_reader", func(t *testing.T) {
		w, _ := open(t)
		defer w.Close()
		boom := errors.New("boom")
		err := w.WriteTensorFrom("a", iotest.ErrReader(boom))
		wantErr(t, err, `tensor "a"`, "read tensor data: boom")
		if !errors.Is(err, boom) {
			t.Error("cause not wrapped")
		}
	})
	t.Run("incomplete_close", func(t *testing.T) {
		w, p := open(t)
		w.WriteTensor("a", make([]byte, 8))
		w.Begin("b")
		w.Write([]byte{1})
		wantErr(t, w.Close(), p, `tensor "b"`, "not completely written (1 of 3 bytes; 1 of 2 tensors unfinished)")
		// The partial file stays and is rejected on open, naming the tensor.
		_, err := Open(p)
		wantErr(t, err, p, `tensor "b"`, "exceed the 9-byte data buffer")
	})
	t.Run("nothing_written", func(t *testing.T) {
		w, p := open(t)
		wantErr(t, w.Close(), p, `tensor "a"`, "0 of 8 bytes; 2 of 2 tensors unfinished")
	})
}

func TestCreateErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.safetensors")
	tests := []struct {
		name  string
		specs []TensorSpec
		want  string
	}{
		{"empty name", []TensorSpec{{Name: "", DType: U8}}, "tensor 0 has an empty name"},
		{"reserved", []TensorSpec{{Name: "__metadata__", DType: U8}}, `tensor "__metadata__": name is reserved`},
		{"duplicate", []TensorSpec{{Name: "a", DType: U8}, {Name: "a", DType: U8}}, `tensor "a": declared twice`},
		{"dtype", []TensorSpec{{Name: "a", DType: "F4"}}, `tensor "a": unsupported dtype "F4"`},
		{"negative", []TensorSpec{{Name: "a", DType: U8, Shape: []int{2, -1}}}, `tensor "a": negative dimension in shape [2 -1]`},
		{"overflow", []TensorSpec{{Name: "a", DType: F32, Shape: []int{math.MaxInt / 2}}}, `tensor "a": shape [` + strconv.Itoa(math.MaxInt/2) + `] of F32 overflows`},
		{"total overflow", []TensorSpec{{Name: "a", DType: U8, Shape: []int{math.MaxInt/2 + 1}}, {Name: "b", DType: U8, Shape: []int{math.MaxInt/2 + 1}}, {Name: "c", DType: U8}}, `tensor "b": data buffer would outgrow`},
		{"rank", []TensorSpec{{Name: "a", DType: U8, Shape: make([]int, 65)}}, "more than 64 dimensions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Create(p, nil, tc.specs)
			if w != nil {
				t.Error("got a writer with an error")
			}
			wantErr(t, err, p, tc.want)
		})
	}
	_, err := Create(filepath.Join(p, "nope", "x.safetensors"), nil, nil)
	wantErr(t, err, "nope", "create")
}

func TestWriteFileErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w.safetensors")
	err := WriteFile(p, nil, []*Tensor{{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}})
	wantErr(t, err, p, `tensor "a"`, "has 4 data bytes, want 8 for shape [2] of F32")
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Error("WriteFile created a file despite invalid input")
	}
	// An empty file of tensors is valid: just a header.
	mustWrite(t, p, nil)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Names()) != 0 {
		t.Errorf("Names = %q", f.Names())
	}
}

var _ io.Writer = (*Writer)(nil)
