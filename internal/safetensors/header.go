package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header. Real headers are well under 1 MiB
// even for models with thousands of tensors; the bound stops a corrupt
// length prefix from allocating gigabytes.
const MaxHeaderSize = 100 << 20

// MaxRank bounds the number of dimensions of a tensor, so a hostile header
// cannot expand into a huge shape slice.
const MaxRank = 64

const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a header. Values obtained from a
// Header share its Shape slice: treat it as read-only.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	// Begin and End are byte offsets within the data buffer, End exclusive.
	Begin, End int64
}

// Numel is the number of elements (1 for a scalar of shape []).
func (t TensorInfo) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size is the tensor's byte size.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// Header is a parsed and validated safetensors header.
type Header struct {
	Tensors  []TensorInfo // sorted by name
	Metadata map[string]string
}

// Lookup finds a tensor by name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	i, ok := slices.BinarySearchFunc(h.Tensors, name, func(t TensorInfo, n string) int {
		return strings.Compare(t.Name, n)
	})
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// DataSize is the end of the last tensor: the smallest data buffer that
// holds every tensor.
func (h *Header) DataSize() int64 {
	var end int64
	for _, t := range h.Tensors {
		end = max(end, t.End)
	}
	return end
}

// ParseHeader parses and validates the JSON header b (the N bytes after the
// length prefix, padding included) against a data buffer of dataLen bytes.
// It does no I/O, never panics, and returns an [*Error] naming the tensor
// at fault where there is one.
func ParseHeader(b []byte, dataLen int64) (*Header, error) {
	return parseHeader(b, dataLen, false)
}

func parseHeader(b []byte, dataLen int64, viaDecoder bool) (*Header, error) {
	if len(b) > MaxHeaderSize {
		return nil, &Error{Msg: fmt.Sprintf("header is %d bytes, over the %d-byte limit", len(b), MaxHeaderSize)}
	}
	if dataLen < 0 {
		return nil, &Error{Msg: fmt.Sprintf("negative data buffer length %d", dataLen)}
	}
	if !utf8.Valid(b) {
		return nil, &Error{Msg: "header is not valid UTF-8"}
	}
	h := &Header{}
	tk := newTokens(b, viaDecoder)
	var current string // tensor being parsed, for error messages
	err := tk.object("header", func(key string) error {
		if key == metadataKey {
			m, err := parseMetadata(tk)
			h.Metadata = m
			return err
		}
		current = key
		t, err := parseTensorInfo(tk, key, dataLen)
		if err != nil {
			return err
		}
		h.Tensors = append(h.Tensors, t)
		current = ""
		return nil
	})
	if err == nil {
		err = tk.end()
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, err
		}
		var dup *dupKeyError
		if errors.As(err, &dup) && current == "" {
			// A repeated top-level key: the tensor (or __metadata__) itself.
			if dup.key == metadataKey {
				return nil, &Error{Msg: "duplicate " + metadataKey}
			}
			return nil, &Error{Tensor: dup.key, Msg: "duplicate tensor name in header"}
		}
		return nil, &Error{Tensor: current, Msg: "invalid header", Err: err}
	}
	if err := checkOverlap(h.Tensors); err != nil {
		return nil, err
	}
	slices.SortFunc(h.Tensors, func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	return h, nil
}

func parseMetadata(tk *tokens) (map[string]string, error) {
	tok, err := tk.next()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		// null is what some writers emit for "no metadata".
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, &Error{Msg: fmt.Sprintf("%s must be an object of strings, found %s", metadataKey, describe(tok))}
	}
	m := map[string]string{}
	err = tk.members(metadataKey, func(key string) error {
		v, err := tk.str(fmt.Sprintf("%s value for key %q", metadataKey, truncate(key, 40)))
		if err != nil {
			return err
		}
		m[key] = v
		return nil
	})
	if err != nil {
		var dup *dupKeyError
		if errors.As(err, &dup) {
			return nil, &Error{Msg: fmt.Sprintf("%s: duplicate key %q", metadataKey, truncate(dup.key, 40))}
		}
		return nil, &Error{Msg: "invalid " + metadataKey, Err: err}
	}
	return m, nil
}

func parseTensorInfo(tk *tokens, name string, dataLen int64) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	var haveDType, haveShape, haveOffsets bool
	err := tk.object("tensor entry", func(key string) error {
		switch key {
		case "dtype":
			s, err := tk.str("dtype")
			if err != nil {
				return err
			}
			t.DType = DType(s)
			haveDType = true
			if !t.DType.Valid() {
				return &Error{Tensor: name, Msg: fmt.Sprintf("unsupported dtype %q", truncate(s, 40))}
			}
		case "shape":
			if err := tk.delim('[', "shape"); err != nil {
				return err
			}
			t.Shape = []int{}
			for tk.more() {
				if len(t.Shape) == MaxRank {
					return &Error{Tensor: name, Msg: fmt.Sprintf("shape has more than %d dimensions", MaxRank)}
				}
				d, err := tk.uint("shape dimension")
				if err != nil {
					return err
				}
				if d > math.MaxInt {
					return &Error{Tensor: name, Msg: fmt.Sprintf("shape dimension %d does not fit in an int", d)}
				}
				t.Shape = append(t.Shape, int(d))
			}
			if err := tk.delim(']', "shape"); err != nil {
				return err
			}
			haveShape = true
		case "data_offsets":
			if err := tk.delim('[', "data_offsets"); err != nil {
				return err
			}
			var off [2]int64
			for i := range off {
				if !tk.more() {
					return fmt.Errorf("data_offsets must hold two integers")
				}
				v, err := tk.uint("data_offsets entry")
				if err != nil {
					return err
				}
				off[i] = v
			}
			if tk.more() {
				return fmt.Errorf("data_offsets must hold two integers")
			}
			if err := tk.delim(']', "data_offsets"); err != nil {
				return err
			}
			t.Begin, t.End = off[0], off[1]
			haveOffsets = true
		default:
			// Unknown fields are ignored, as other readers do; the
			// required ones are checked below.
			return tk.skip()
		}
		return nil
	})
	if err != nil {
		var dup *dupKeyError
		if errors.As(err, &dup) {
			return t, &Error{Tensor: name, Msg: fmt.Sprintf("duplicate field %q in tensor entry", dup.key)}
		}
		return t, err
	}
	switch {
	case !haveDType:
		return t, &Error{Tensor: name, Msg: "missing dtype"}
	case !haveShape:
		return t, &Error{Tensor: name, Msg: "missing shape"}
	case !haveOffsets:
		return t, &Error{Tensor: name, Msg: "missing data_offsets"}
	}
	return t, checkExtent(t, dataLen)
}

// checkExtent verifies that the offsets are ordered, lie inside the data
// buffer and span exactly numel × element size bytes.
func checkExtent(t TensorInfo, dataLen int64) error {
	if t.Begin > t.End {
		return &Error{Tensor: t.Name, Msg: fmt.Sprintf("data_offsets [%d, %d] end before they begin", t.Begin, t.End)}
	}
	if t.End > dataLen {
		return &Error{Tensor: t.Name, Msg: fmt.Sprintf("data_offsets [%d, %d] exceed the %d-byte data buffer", t.Begin, t.End, dataLen)}
	}
	want, ok := byteSize(t.DType, t.Shape)
	if !ok {
		return &Error{Tensor: t.Name, Msg: fmt.Sprintf("shape %v of %s overflows the addressable size", t.Shape, t.DType)}
	}
	if got := t.End - t.Begin; got != want {
		return &Error{Tensor: t.Name, Msg: fmt.Sprintf("data_offsets [%d, %d] span %d bytes, but shape %v of %s needs %d",
			t.Begin, t.End, got, t.Shape, t.DType, want)}
	}
	return nil
}

// byteSize is numel × element size, or false if that overflows int (and so
// could never be sliced).
func byteSize(d DType, shape []int) (int64, bool) {
	if slices.Contains(shape, 0) {
		return 0, true
	}
	n := int64(d.Size())
	for _, dim := range shape {
		if dim < 0 || n > math.MaxInt/int64(dim) {
			return 0, false
		}
		n *= int64(dim)
	}
	return n, true
}

// checkOverlap rejects tensors whose byte ranges intersect. Empty tensors
// occupy no bytes and cannot overlap anything.
func checkOverlap(ts []TensorInfo) error {
	order := make([]int, 0, len(ts))
	for i, t := range ts {
		if t.End > t.Begin {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := ts[a].Begin - ts[b].Begin; c != 0 {
			return cmpSign(c)
		}
		return strings.Compare(ts[a].Name, ts[b].Name)
	})
	for k := 1; k < len(order); k++ {
		prev, cur := ts[order[k-1]], ts[order[k]]
		// Sorted by Begin with no overlap so far, so the previous tensor
		// has the largest End seen.
		if cur.Begin < prev.End {
			return &Error{Tensor: cur.Name, Msg: fmt.Sprintf("data_offsets [%d, %d] overlap tensor %q at [%d, %d]",
				cur.Begin, cur.End, prev.Name, prev.Begin, prev.End)}
		}
	}
	return nil
}

func cmpSign(c int64) int {
	if c < 0 {
		return -1
	}
	return 1
}
