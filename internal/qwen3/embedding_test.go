package qwen3

import (
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/mmap"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// failingReader fails every read.
type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("read failed") }

// TestEmbeddingReadsRows: a table loaded from a file reads each row with
// pread (the tensor's Source), and gives bitwise what the same table read
// through its mapping gives, for F32, BF16 and F16 tables; a row the
// Source cannot read comes from the mapping.
func TestEmbeddingReadsRows(t *testing.T) {
	if !mmap.Maps {
		t.Skip("this system's files are read whole into memory: rows come from the copy")
	}
	const rows, hidden = 37, 24
	vals := make([]float32, rows*hidden)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i)*0.37)) * float32(1+i%5)
	}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		var data []byte
		for _, v := range vals {
			switch dt {
			case safetensors.F32:
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
			case safetensors.BF16:
				data = binary.LittleEndian.AppendUint16(data, half.F32ToBF16(v))
			default:
				data = binary.LittleEndian.AppendUint16(data, half.F32ToF16(v))
			}
		}
		p := filepath.Join(t.TempDir(), "e.safetensors")
		// A tensor before the table, so that the table starts at an odd
		// offset of the file.
		pad := &safetensors.Tensor{Name: "a", DType: safetensors.U8, Shape: []int{3}, Data: []byte{1, 2, 3}}
		if err := safetensors.WriteFile(p, nil, []*safetensors.Tensor{pad, {Name: "e", DType: dt, Shape: []int{rows, hidden}, Data: data}}); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		e, err := LoadDenseEmbedding(f, "e", rows, hidden)
		if err != nil {
			t.Fatal(err)
		}
		de := e.(*DenseEmbedding)
		if de.src == nil {
			t.Fatalf("%s: a table from a file has no Source", dt)
		}
		mapped := &DenseEmbedding{dtype: de.dtype, f32: de.f32, u16: de.u16, rows: de.rows, hidden: de.hidden}
		failing := &DenseEmbedding{dtype: de.dtype, f32: de.f32, u16: de.u16, rows: de.rows, hidden: de.hidden, src: failingReader{}, at: de.at}
		got, want, fell := make([]float32, hidden), make([]float32, hidden), make([]float32, hidden)
		for _, id := range []int{0, 1, 17, rows - 1} {
			e.Lookup(got, id)
			mapped.Lookup(want, id)
			failing.Lookup(fell, id)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) || math.Float32bits(fell[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s row %d [%d]: read %g, fallback %g, mapped %g", dt, id, i, got[i], fell[i], want[i])
				}
			}
			if dt == safetensors.F32 && got[3] != vals[id*hidden+3] {
				t.Fatalf("row %d: %g, want %g", id, got[3], vals[id*hidden+3])
			}
		}
	}
}
