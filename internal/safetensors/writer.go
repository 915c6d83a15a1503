package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"

	"github.com/streamguard/streamguard/internal/folio"
)

// TensorSpec declares a tensor to [Create] before its bytes are written.
type TensorSpec struct {
	Name  string
	DType DType
	Shape []int
}

// Writer streams a safetensors file: the header goes out at [Create], then
// each tensor's bytes in declaration order. It is not safe for concurrent
// use.
type Writer struct {
	path    string
	f       *os.File
	bw      *folio.Writer // whole 4 MiB pieces: see package folio
	tensors []TensorInfo  // declaration order, with offsets
	cur     int           // tensor being written; -1 before the first Begin
	written int64         // bytes of tensors[cur] written so far
	err     error         // first I/O error; the file is unusable after it
	closed  bool
}

// Create validates the specs, lays the tensors out back to back in the
// given order, creates (or truncates) path and writes the header, padded
// with spaces to a multiple of 8 bytes so the data buffer is aligned.
func Create(path string, metadata map[string]string, specs []TensorSpec) (*Writer, error) {
	tensors, err := layout(specs)
	if err != nil {
		return nil, inFile(err, path)
	}
	hdr, err := encodeHeader(metadata, tensors)
	if err != nil {
		return nil, inFile(err, path)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "create", Err: unwrapPath(err)}
	}
	w := &Writer{path: path, f: f, bw: folio.NewWriter(f, 0), tensors: tensors, cur: -1}
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(hdr)))
	if _, err := w.bw.Write(append(prefix[:], hdr...)); err != nil {
		f.Close()
		return nil, &Error{File: path, Msg: "write header", Err: err}
	}
	return w, nil
}

// layout checks specs and assigns contiguous offsets. Tensors are not
// padded apart: other readers require the data buffer to be exactly the
// concatenation of the tensors.
func layout(specs []TensorSpec) ([]TensorInfo, error) {
	seen := make(map[string]bool, len(specs))
	out := make([]TensorInfo, len(specs))
	var off int64
	for i, s := range specs {
		switch {
		case s.Name == "":
			return nil, &Error{Msg: fmt.Sprintf("tensor %d has an empty name", i)}
		case s.Name == metadataKey:
			return nil, &Error{Tensor: s.Name, Msg: "name is reserved for metadata"}
		case seen[s.Name]:
			return nil, &Error{Tensor: s.Name, Msg: "declared twice"}
		case !s.DType.Valid():
			return nil, &Error{Tensor: s.Name, Msg: fmt.Sprintf("unsupported dtype %q", string(s.DType))}
		case len(s.Shape) > MaxRank:
			return nil, &Error{Tensor: s.Name, Msg: fmt.Sprintf("shape has more than %d dimensions", MaxRank)}
		}
		for _, d := range s.Shape {
			if d < 0 {
				return nil, &Error{Tensor: s.Name, Msg: fmt.Sprintf("negative dimension in shape %v", s.Shape)}
			}
		}
		size, ok := byteSize(s.DType, s.Shape)
		if !ok {
			return nil, &Error{Tensor: s.Name, Msg: fmt.Sprintf("shape %v of %s overflows the addressable size", s.Shape, s.DType)}
		}
		if off > math.MaxInt-size {
			return nil, &Error{Tensor: s.Name, Msg: "data buffer would outgrow the addressable size"}
		}
		seen[s.Name] = true
		out[i] = TensorInfo{Name: s.Name, DType: s.DType, Shape: slices.Clone(s.Shape), Begin: off, End: off + size}
		off += size
	}
	return out, nil
}

// encodeHeader renders the header JSON: __metadata__ first with sorted
// keys, then the tensors in data order, padded to a multiple of 8 bytes.
func encodeHeader(metadata map[string]string, tensors []TensorInfo) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		comma()
		b.WriteString(`"` + metadataKey + `":{`)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
	}
	for _, t := range tensors {
		comma()
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":"` + string(t.DType) + `","shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, t.Begin, t.End)
	}
	b.WriteByte('}')
	for (8+b.Len())%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderSize {
		return nil, &Error{Msg: fmt.Sprintf("header would be %d bytes, over the %d-byte limit", b.Len(), MaxHeaderSize)}
	}
	return b.Bytes(), nil
}

// writeJSONString quotes s without HTML escaping, so names round-trip
// byte for byte through readers that compare raw header text.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)           // a string always encodes
	b.Truncate(b.Len() - 1) // Encode appends a newline
}

// Begin starts the next tensor, which must be the one named: tensors are
// written in the order given to Create, each completely before the next.
func (w *Writer) Begin(name string) error {
	next, err := w.next(name)
	if err != nil {
		return err
	}
	w.cur, w.written = next, 0
	return nil
}

// next checks that name may start now and returns its index.
func (w *Writer) next(name string) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.cur >= 0 {
		if t := w.tensors[w.cur]; w.written != t.Size() {
			return 0, &Error{File: w.path, Tensor: t.Name, Msg: fmt.Sprintf("incomplete: %d of %d bytes written before starting %q", w.written, t.Size(), name)}
		}
	}
	next := w.cur + 1
	if next == len(w.tensors) {
		return 0, &Error{File: w.path, Tensor: name, Msg: "every declared tensor has already been written"}
	}
	if want := w.tensors[next].Name; want != name {
		return 0, &Error{File: w.path, Tensor: name, Msg: fmt.Sprintf("written out of order: the next tensor is %q", want)}
	}
	return next, nil
}

// Write appends bytes to the tensor started by Begin. Writing past the
// tensor's size is an error and writes nothing.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.cur < 0 {
		return 0, &Error{File: w.path, Msg: "Write before Begin"}
	}
	t := w.tensors[w.cur]
	if int64(len(p)) > t.Size()-w.written {
		return 0, &Error{File: w.path, Tensor: t.Name, Msg: fmt.Sprintf("%d more bytes would exceed its size of %d (%d written)", len(p), t.Size(), w.written)}
	}
	n, err := w.bw.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = &Error{File: w.path, Tensor: t.Name, Msg: "write", Err: err}
		return n, w.err
	}
	return n, nil
}

// WriteTensor writes a whole tensor; data must be exactly its size.
func (w *Writer) WriteTensor(name string, data []byte) error {
	next, err := w.next(name)
	if err != nil {
		return err
	}
	if t := w.tensors[next]; int64(len(data)) != t.Size() {
		return &Error{File: w.path, Tensor: name, Msg: fmt.Sprintf("got %d bytes, want %d for shape %v of %s", len(data), t.Size(), t.Shape, t.DType)}
	}
	w.cur, w.written = next, 0
	_, err = w.Write(data)
	return err
}

// WriteTensorFrom copies a whole tensor from r, which must hold exactly
// the tensor's size: a short reader and a reader with bytes left over are
// both errors (one byte past the end is read to tell).
func (w *Writer) WriteTensorFrom(name string, r io.Reader) error {
	if err := w.Begin(name); err != nil {
		return err
	}
	t := w.tensors[w.cur]
	n, err := io.Copy(writerOnly{w}, io.LimitReader(r, t.Size()))
	if w.err != nil {
		return w.err
	}
	if err != nil {
		return &Error{File: w.path, Tensor: name, Msg: "read tensor data", Err: err}
	}
	if n < t.Size() {
		return &Error{File: w.path, Tensor: name, Msg: fmt.Sprintf("reader ended after %d of %d bytes", n, t.Size())}
	}
	var extra [1]byte
	switch _, err := io.ReadFull(r, extra[:]); {
	case err == nil:
		return &Error{File: w.path, Tensor: name, Msg: fmt.Sprintf("reader holds more than the tensor's %d bytes", t.Size())}
	case err != io.EOF:
		return &Error{File: w.path, Tensor: name, Msg: "read tensor data", Err: err}
	}
	return nil
}

// writerOnly hides ReadFrom-style fast paths so every byte passes the
// size accounting in Write.
type writerOnly struct{ w *Writer }

func (o writerOnly) Write(p []byte) (int, error) { return o.w.Write(p) }

func (w *Writer) usable() error {
	if w.closed {
		return &Error{File: w.path, Msg: "writer is closed"}
	}
	return w.err
}

// Tensors is the layout: every declared tensor with its offsets, in
// declaration order (a copy; Shape slices are shared).
func (w *Writer) Tensors() []TensorInfo { return slices.Clone(w.tensors) }

// DataSize is the total byte size of the declared tensors, the figure a
// sharded index's total_size adds up.
func (w *Writer) DataSize() int64 {
	if len(w.tensors) == 0 {
		return 0
	}
	return w.tensors[len(w.tensors)-1].End
}

// Close flushes and closes the file. It reports an error if any declared
// tensor was not completely written; the incomplete file is left in place
// (it fails to open as truncated) and nothing is removed.
func (w *Writer) Close() error {
	if w.closed {
		return &Error{File: w.path, Msg: "writer is closed"}
	}
	w.closed = true
	var errs []error
	if w.err != nil {
		errs = append(errs, w.err)
	} else if err := w.bw.Flush(); err != nil {
		errs = append(errs, &Error{File: w.path, Msg: "write", Err: err})
	}
	if err := w.f.Close(); err != nil {
		errs = append(errs, &Error{File: w.path, Msg: "close", Err: unwrapPath(err)})
	}
	if err := w.incomplete(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (w *Writer) incomplete() error {
	i := w.cur
	if i < 0 || w.written == w.tensors[i].Size() {
		i++ // the current tensor is complete; the first missing one is next
	}
	if i >= len(w.tensors) {
		return nil
	}
	t := w.tensors[i]
	done := int64(0)
	if i == w.cur {
		done = w.written
	}
	return &Error{File: w.path, Tensor: t.Name, Msg: fmt.Sprintf("not completely written (%d of %d bytes; %d of %d tensors unfinished)",
		done, t.Size(), len(w.tensors)-i, len(w.tensors))}
}

// WriteFile writes tensors, in order, with metadata to path in one call,
// for files small enough to hold in memory. Each tensor's Data must match
// its dtype and shape. On failure the partial file is removed.
func WriteFile(path string, metadata map[string]string, tensors []*Tensor) error {
	specs := make([]TensorSpec, len(tensors))
	for i, t := range tensors {
		specs[i] = TensorSpec{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	layoutInfo, err := layout(specs)
	if err != nil {
		return inFile(err, path)
	}
	for i, t := range tensors {
		if want := layoutInfo[i].Size(); int64(len(t.Data)) != want {
			return &Error{File: path, Tensor: t.Name, Msg: fmt.Sprintf("has %d data bytes, want %d for shape %v of %s", len(t.Data), want, t.Shape, t.DType)}
		}
	}
	w, err := Create(path, metadata, specs)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err = w.WriteTensor(t.Name, t.Data); err != nil {
			break
		}
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
