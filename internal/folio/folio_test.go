package folio

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// recorder records the size of every write.
type recorder struct {
	bytes.Buffer
	sizes []int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	return r.Buffer.Write(p)
}

// TestPiecesAligned: whatever the sizes written, the pieces end at
// multiples of Chunk of the file, and every byte arrives once, in order.
func TestPiecesAligned(t *testing.T) {
	for _, off := range []int64{0, 1, Chunk - 1, Chunk, 3*Chunk + 12345} {
		var r recorder
		w := NewWriter(&r, off)
		var want []byte
		for i, n := range []int{10, Chunk, 3, 2*Chunk + 7, 0, 1 << 20, 5} {
			p := bytes.Repeat([]byte{byte(i + 1)}, n)
			want = append(want, p...)
			if got, err := w.Write(p); got != n || err != nil {
				t.Fatalf("off %d: Write(%d bytes) = %d, %v", off, n, got, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Bytes(), want) {
			t.Fatalf("off %d: the bytes written differ from those given", off)
		}
		end := off
		for i, n := range r.sizes {
			end += int64(n)
			if i < len(r.sizes)-1 && end%Chunk != 0 {
				t.Errorf("off %d: piece %d ends at %d, not a multiple of %d (sizes %v)", off, i, end, Chunk, r.sizes)
			}
			if n > Chunk {
				t.Errorf("off %d: a piece of %d bytes", off, n)
			}
		}
		if first := Chunk - off%Chunk; len(r.sizes) > 1 && int64(r.sizes[0]) != first {
			t.Errorf("off %d: first piece %d bytes, want %d", off, r.sizes[0], first)
		}
	}
}

type failing struct{ after int }

func (f *failing) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

// TestWriteError: the first error is returned by that call and every later
// one, and nothing more is written after it.
func TestWriteError(t *testing.T) {
	f := &failing{after: 1}
	w := NewWriter(f, 0)
	p := make([]byte, Chunk)
	if _, err := w.Write(p); err != nil {
		t.Fatalf("first piece: %v", err)
	}
	n, err := w.Write(slices.Concat(p, p))
	if err == nil || n != Chunk {
		t.Fatalf("second and third pieces: Write = %d, %v; want %d and the error", n, err, Chunk)
	}
	if _, err2 := w.Write([]byte{1}); err2 != err {
		t.Errorf("after the error: %v, want %v", err2, err)
	}
	if err2 := w.Flush(); err2 != err {
		t.Errorf("Flush after the error: %v, want %v", err2, err)
	}
}
