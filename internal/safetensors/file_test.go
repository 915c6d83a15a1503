package safetensors

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/streamguard/streamguard/internal/mmap"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"unsafe"
)

// TestWriterGolden pins the exact bytes: length prefix, compact JSON with
// __metadata__ first, space padding to 8 bytes, little-endian data.
func TestWriterGolden(t *testing.T) {
	p := filepath.Join(t.TempDir(), "g.safetensors")
	data := []byte{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0} // 1.0, -2.0
	mustWrite(t, p, map[string]string{"format": "pt"}, &Tensor{Name: "a", DType: F32, Shape: []int{2}, Data: data})
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{88, 0, 0, 0, 0, 0, 0, 0}
	want = append(want, `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   `...)
	want = append(want, data...)
	if !bytes.Equal(got, want) {
		t.Fatalf("file bytes\n got %q\nwant %q", got, want)
	}
}

// TestReadForeignLayout reads a file laid out the way other writers do:
// tensors ordered by alignment rather than name, pretty-printed JSON and
// padding.
func TestReadForeignLayout(t *testing.T) {
	hdr := "{\n  \"__metadata__\": {\"format\": \"pt\"},\n" +
		"  \"w.bias\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [8, 12]},\n" +
		"  \"w.weight\": {\"dtype\": \"F32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]}\n}"
	for (8+len(hdr))%8 != 0 {
		hdr += " "
	}
	data := []byte{0, 0, 0x80, 0x3f, 0, 0, 0x40, 0x40, 0x80, 0x3f, 0x00, 0xc0} // F32 1, 3; BF16 1, -2
	p := writeTemp(t, t.TempDir(), "x.safetensors", rawFile(hdr, data))
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Names(); !slices.Equal(got, []string{"w.bias", "w.weight"}) {
		t.Errorf("Names = %q", got)
	}
	w, err := f.Tensor("w.weight")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := w.F32(); err != nil || !slices.Equal(v, []float32{1, 3}) {
		t.Errorf("w.weight = %v, %v; want [1 3]", v, err)
	}
	b, err := f.Tensor("w.bias")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := b.Float32s(); err != nil || !slices.Equal(v, []float32{1, -2}) {
		t.Errorf("w.bias = %v, %v; want [1 -2]", v, err)
	}
	if f.Metadata()["format"] != "pt" {
		t.Errorf("metadata = %v", f.Metadata())
	}
}

func le(vals ...any) []byte {
	var b []byte
	for _, v := range vals {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

func TestRoundTripAllDTypes(t *testing.T) {
	ts := []*Tensor{
		{Name: "f64", DType: F64, Shape: []int{2}, Data: le(1.5, -math.MaxFloat64)},
		{Name: "f32", DType: F32, Shape: []int{2, 2}, Data: le(float32(1), float32(-0.5), float32(math.Inf(1)), float32(3.25))},
		{Name: "f16", DType: F16, Shape: []int{3}, Data: le(uint16(0x3c00), uint16(0xc000), uint16(0x3555))},
		{Name: "bf16", DType: BF16, Shape: []int{3}, Data: le(uint16(0x3f80), uint16(0xc000), uint16(0x3dcc))},
		{Name: "f8e4m3", DType: F8E4M3, Shape: []int{2}, Data: []byte{0x38, 0xb8}},
		{Name: "f8e5m2", DType: F8E5M2, Shape: []int{1}, Data: []byte{0x3c}},
		{Name: "i64", DType: I64, Shape: []int{2}, Data: le(int64(math.MinInt64), int64(7))},
		{Name: "i32", DType: I32, Shape: []int{1, 3}, Data: le(int32(-1), int32(0x12345678), int32(math.MinInt32))},
		{Name: "i16", DType: I16, Shape: []int{1}, Data: le(int16(-300))},
		{Name: "i8", DType: I8, Shape: []int{3}, Data: []byte{0x80, 0x7f, 0xff}},
		{Name: "u64", DType: U64, Shape: []int{1}, Data: le(uint64(math.MaxUint64))},
		{Name: "u32", DType: U32, Shape: []int{1}, Data: le(uint32(0xdeadbeef))},
		{Name: "u16", DType: U16, Shape: []int{2}, Data: le(uint16(1), uint16(65535))},
		{Name: "u8", DType: U8, Shape: []int{3}, Data: []byte{0, 128, 255}},
		{Name: "bool", DType: Bool, Shape: []int{2}, Data: []byte{1, 0}},
		{Name: "scalar", DType: F32, Shape: []int{}, Data: le(float32(42))},
		{Name: "empty", DType: F32, Shape: []int{0, 4}, Data: nil},
	}
	p := filepath.Join(t.TempDir(), "all.safetensors")
	meta := map[string]string{"format": "pt", "quote\"<&>": "ünïcode\n"}
	mustWrite(t, p, meta, ts...)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Metadata()) != 2 || f.Metadata()["quote\"<&>"] != "ünïcode\n" {
		t.Errorf("metadata = %q", f.Metadata())
	}
	if len(f.Names()) != len(ts) {
		t.Errorf("got %d tensors, want %d", len(f.Names()), len(ts))
	}
	for _, want := range ts {
		got, err := f.Tensor(want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data) || got.File != p {
			t.Errorf("%s: got %s %v %x (%s), want %s %v %x", want.Name, got.DType, got.Shape, got.Data, got.File, want.DType, want.Shape, want.Data)
		}
		if got.Numel() != want.Numel() {
			t.Errorf("%s: Numel %d, want %d", want.Name, got.Numel(), want.Numel())
		}
	}

	get := func(name string) *Tensor {
		x, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	check := func(name string, got, want any, err error) {
		t.Helper()
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, %v; want %v", name, got, err, want)
		}
	}
	v32, err := get("f32").F32()
	check("f32.F32", v32, []float32{1, -0.5, float32(math.Inf(1)), 3.25}, err)
	u16, err := get("bf16").U16()
	check("bf16.U16", u16, []uint16{0x3f80, 0xc000, 0x3dcc}, err)
	i32, err := get("i32").I32()
	check("i32.I32", i32, []int32{-1, 0x12345678, math.MinInt32}, err)
	i64, err := get("i64").I64()
	check("i64.I64", i64, []int64{math.MinInt64, 7}, err)
	i8, err := get("i8").I8()
	check("i8.I8", i8, []int8{-128, 127, -1}, err)
	u8, err := get("u8").U8()
	check("u8.U8", u8, []uint8{0, 128, 255}, err)
	// Widening is exact: 0x3dcc is bf16 0.099609375, 0x3555 is f16 0.333251953125.
	fb, err := get("bf16").Float32s()
	check("bf16.Float32s", fb, []float32{1, -2, 0.099609375}, err)
	fh, err := get("f16").Float32s()
	check("f16.Float32s", fh, []float32{1, -2, 0.333251953125}, err)
	ff, err := get("scalar").Float32s()
	check("scalar.Float32s", ff, []float32{42}, err)
	fe, err := get("empty").F32()
	check("empty.F32", fe, []float32{}, err)
}

func TestAccessorDTypeMismatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	mustWrite(t, p, nil, &Tensor{Name: "b", DType: BF16, Shape: []int{1}, Data: []byte{0, 0}},
		&Tensor{Name: "i", DType: I32, Shape: []int{1}, Data: []byte{0, 0, 0, 0}})
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := f.Tensor("b")
	_, err = b.F32()
	wantErr(t, err, p, `tensor "b"`, "dtype is BF16, want F32")
	_, err = b.I32()
	wantErr(t, err, `tensor "b"`, "want I32")
	i, _ := f.Tensor("i")
	_, err = i.Float32s()
	wantErr(t, err, p, `tensor "i"`, "dtype is I32, want F32 or F16 or BF16")
	_, err = i.U16()
	wantErr(t, err, "want BF16 or F16 or U16")
	_, err = i.I64()
	wantErr(t, err, "want I64")
	_, err = i.I8()
	wantErr(t, err, "want I8")
	_, err = i.U8()
	wantErr(t, err, "want U8")
	bad := &Tensor{Name: "odd", DType: F32, Shape: []int{1}, Data: []byte{1, 2, 3}}
	_, err = bad.F32()
	wantErr(t, err, `tensor "odd"`, "3 data bytes is not a whole number of 4-byte F32 elements")
}

func TestZeroCopy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "z.safetensors")
	mustWrite(t, p, nil,
		&Tensor{Name: "a", DType: U16, Shape: []int{2}, Data: le(uint16(1), uint16(2))},
		&Tensor{Name: "w", DType: F32, Shape: []int{3}, Data: le(float32(1), float32(2), float32(3))})
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _ := f.Tensor("w")
	v, err := w.F32()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info("w")
	// The data buffer starts 8-aligned and "w" sits at offset 4.
	want := unsafe.Pointer(&f.data[info.Begin])
	if unsafe.Pointer(&v[0]) != want || unsafe.Pointer(&w.Data[0]) != want {
		t.Errorf("F32 view at %p, Data at %p; want both at the mapping, %p", &v[0], &w.Data[0], want)
	}
	base := uintptr(unsafe.Pointer(&f.mapping[0]))
	if off := uintptr(want) - base; off != uintptr(len(f.mapping)-12) {
		t.Errorf("tensor is %d bytes into the mapping, want %d", off, len(f.mapping)-12)
	}
	if cap(w.Data) != 12 {
		t.Errorf("cap(Data) = %d, want 12 so append cannot write into the mapping", cap(w.Data))
	}
	a, _ := f.Tensor("a")
	u, _ := a.U16()
	if unsafe.Pointer(&u[0]) != unsafe.Pointer(&a.Data[0]) {
		t.Error("U16 view is a copy")
	}
	// Float32s must copy: callers own its result.
	c, _ := w.Float32s()
	if &c[0] == &v[0] {
		t.Error("Float32s aliases the mapping")
	}
}

// TestReadAtAndRelease: a file tensor's Source and At read its bytes from
// the file itself; ReleaseMapping leaves the mapping readable (its pages
// are mapped again); ReadAt after Close is an error.
func TestReadAtAndRelease(t *testing.T) {
	if !mmap.Maps {
		t.Skip("this system's files are read whole into memory: tensors have no Source")
	}
	p := filepath.Join(t.TempDir(), "r.safetensors")
	mustWrite(t, p, nil,
		&Tensor{Name: "a", DType: U16, Shape: []int{3}, Data: le(uint16(1), uint16(2), uint16(3))},
		&Tensor{Name: "w", DType: F32, Shape: []int{2}, Data: le(float32(1.5), float32(-2))})
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "w"} {
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if tn.Source == nil {
			t.Fatalf("%s: no Source", name)
		}
		got := make([]byte, len(tn.Data))
		if n, err := tn.Source.ReadAt(got, tn.At); err != nil || n != len(got) || !bytes.Equal(got, tn.Data) {
			t.Errorf("%s: read %x (%d, %v) at %d, the mapping holds %x", name, got, n, err, tn.At, tn.Data)
		}
	}
	w, _ := f.Tensor("w")
	before := bytes.Clone(w.Data)
	f.ReleaseMapping()
	if !bytes.Equal(w.Data, before) {
		t.Error("the mapping reads differently after ReleaseMapping")
	}
	f.Close()
	if _, err := f.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("ReadAt after Close: no error")
	}
	f.ReleaseMapping() // after Close: nothing to release, no panic
}

// TestUnalignedCopies puts an F32 and a BF16 tensor at odd offsets: the
// views must still be right, as copies.
func TestUnalignedCopies(t *testing.T) {
	p := filepath.Join(t.TempDir(), "u.safetensors")
	mustWrite(t, p, nil,
		u8Tensor("a", 9),
		&Tensor{Name: "b", DType: F32, Shape: []int{2}, Data: le(float32(1.5), float32(-7))},
		&Tensor{Name: "c", DType: BF16, Shape: []int{1}, Data: le(uint16(0x4049))},
		&Tensor{Name: "d", DType: I64, Shape: []int{1}, Data: le(int64(-5))},
		&Tensor{Name: "e", DType: I32, Shape: []int{1}, Data: le(int32(-6))})
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := f.Tensor("b")
	if uintptr(unsafe.Pointer(&b.Data[0]))%4 == 0 {
		t.Fatal("test layout broken: b is aligned")
	}
	v, err := b.F32()
	if err != nil || !slices.Equal(v, []float32{1.5, -7}) {
		t.Errorf("F32 = %v, %v", v, err)
	}
	if unsafe.Pointer(&v[0]) == unsafe.Pointer(&b.Data[0]) {
		t.Error("unaligned view was not copied")
	}
	c, _ := f.Tensor("c")
	if x, err := c.Float32s(); err != nil || !slices.Equal(x, []float32{3.140625}) {
		t.Errorf("c = %v, %v", x, err)
	}
	d, _ := f.Tensor("d")
	if x, err := d.I64(); err != nil || !slices.Equal(x, []int64{-5}) {
		t.Errorf("d = %v, %v", x, err)
	}
	e, _ := f.Tensor("e")
	if x, err := e.I32(); err != nil || !slices.Equal(x, []int32{-6}) {
		t.Errorf("e = %v, %v", x, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	good := `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	big := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	tests := []struct {
		name string
		file []byte
		want []string
	}{
		{"empty", nil, []string{"file is 0 bytes, too short"}},
		{"short prefix", []byte{1, 2, 3}, []string{"file is 3 bytes, too short"}},
		{"header length too big", append(big, "{}"...), []string{"header length 104857601 is over the 104857600-byte limit"}},
		{"header past end", rawFile(good, make([]byte, 8))[:20], []string{"header length 54 exceeds the 12 bytes that follow it"}},
		{"data truncated", rawFile(good, make([]byte, 5)), []string{`tensor "w"`, "[0, 8] exceed the 5-byte data buffer"}},
		{"bad JSON", rawFile(`{"w":{`, nil), []string{`tensor "w"`, "invalid header"}},
		{"unknown dtype", rawFile(`{"w":{"dtype":"Q8","shape":[2],"data_offsets":[0,2]}}`, make([]byte, 2)), []string{`tensor "w"`, `unsupported dtype "Q8"`}},
		{"size mismatch", rawFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), []string{`tensor "w"`, "needs 12"}},
		{"overlap", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"U8","shape":[1],"data_offsets":[7,8]}}`, make([]byte, 8)), []string{`tensor "x"`, `overlap tensor "w"`}},
		{"duplicate", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, make([]byte, 2)), []string{`tensor "w"`, "duplicate tensor name"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, dir, fmt.Sprintf("bad%d.safetensors", i), tc.file)
			f, err := Open(p)
			if f != nil {
				t.Error("got a file with an error")
			}
			wantErr(t, err, append([]string{"safetensors: " + p + ": "}, tc.want...)...)
		})
	}
	_, err := Open(filepath.Join(dir, "missing.safetensors"))
	wantErr(t, err, "missing.safetensors", "no such file")
	_, err = Open(dir)
	wantErr(t, err, dir, "not a regular file")
}

func TestClosedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.safetensors")
	mustWrite(t, p, nil, u8Tensor("a", 1))
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Tensor("nope"); err == nil {
		t.Error("missing tensor: no error")
	} else {
		wantErr(t, err, p, `tensor "nope"`, "no such tensor")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err = f.Tensor("a")
	wantErr(t, err, p, `tensor "a"`, "file is closed")
	if !f.Has("a") {
		t.Error("header is gone after Close")
	}
}

// TestConcurrentUse exercises concurrent lookups and a racing Close under
// -race; Tensor must either succeed or report the file closed.
func TestConcurrentUse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.safetensors")
	mustWrite(t, p, nil, u8Tensor("a", 1, 2), u8Tensor("b", 3))
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := f.Tensor("b"); err != nil {
					wantErr(t, err, "file is closed")
					return
				}
			}
		})
	}
	f.Close()
	wg.Wait()
}
