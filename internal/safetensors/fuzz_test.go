package safetensors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var headerSeeds = []string{
	`{}`,
	`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   `,
	`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[],"data_offsets":[8,12]}}`,
	`{"a":{"dtype":"U8","shape":[0],"data_offsets":[3,3]},"b":{"dtype":"I8","shape":[1],"data_offsets":[2,3]}}`,
	`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`,
	`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
	`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[1],"data_offsets":[7,8]}}`,
	`{"__metadata__":{"k":1}}`,
	`{"__metadata__":null,"x":{"dtype":"Q4","shape":[1],"data_offsets":[0,1],"extra":[{}]}}`,
	`{"a":{"dtype":"F64","shape":[1.5],"data_offsets":[0,-8]}}`,
	`[1,2]`,
	"{\"\xff\":1}",
}

// checkHeader asserts what ParseHeader promises for every header it
// accepts.
func checkHeader(t *testing.T, h *Header, dataLen int64) {
	t.Helper()
	if !slices.IsSortedFunc(h.Tensors, func(a, b TensorInfo) int {
		return bytes.Compare([]byte(a.Name), []byte(b.Name))
	}) {
		t.Fatal("tensors not sorted")
	}
	for i, ti := range h.Tensors {
		if i > 0 && h.Tensors[i-1].Name == ti.Name {
			t.Fatalf("duplicate %q", ti.Name)
		}
		if !ti.DType.Valid() || ti.Begin < 0 || ti.Begin > ti.End || ti.End > dataLen || len(ti.Shape) > MaxRank {
			t.Fatalf("bad tensor %+v", ti)
		}
		if int64(ti.Numel())*int64(ti.DType.Size()) != ti.Size() {
			t.Fatalf("size of %+v", ti)
		}
		for _, o := range h.Tensors[:i] {
			if ti.Size() > 0 && o.Size() > 0 && ti.Begin < o.End && o.Begin < ti.End {
				t.Fatalf("%q overlaps %q", ti.Name, o.Name)
			}
		}
		if got, ok := h.Lookup(ti.Name); !ok || got.Begin != ti.Begin {
			t.Fatalf("Lookup(%q) failed", ti.Name)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add([]byte(s), int64(16))
	}
	f.Add([]byte(headerSeeds[1]), int64(7))
	f.Add([]byte(headerSeeds[1]), int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, dataLen int64) {
		h, err := ParseHeader(b, dataLen)
		// The fast lexer and json.Decoder must agree exactly.
		h2, err2 := parseHeader(b, dataLen, true)
		if fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("fast path: %v\ndecoder path: %v", err, err2)
		}
		if err == nil && !sameHeader(h, h2) {
			t.Fatalf("fast path %+v\ndecoder path %+v", h, h2)
		}
		if err != nil {
			if h != nil {
				t.Fatal("header and error")
			}
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T is not *Error", err)
			}
			return
		}
		checkHeader(t, h, dataLen)
		// What parses must survive a write and a re-parse unchanged.
		specs := make([]TensorSpec, len(h.Tensors))
		for i, ti := range h.Tensors {
			specs[i] = TensorSpec{ti.Name, ti.DType, ti.Shape}
		}
		tensors, err := layout(specs)
		if err != nil {
			if len(h.Tensors) > 0 && h.Tensors[0].Name == "" {
				return // the writer refuses empty names the reader accepts
			}
			t.Fatalf("layout of a parsed header: %v", err)
		}
		enc, err := encodeHeader(h.Metadata, tensors)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, ti := range tensors {
			total += ti.Size()
		}
		h3, err := ParseHeader(enc, total)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, enc)
		}
		if len(h3.Tensors) != len(h.Tensors) || !maps.Equal(h3.Metadata, h.Metadata) {
			t.Fatalf("re-parse changed entries or metadata:\n%s", enc)
		}
		for i, a := range h.Tensors {
			b := h3.Tensors[i]
			if a.Name != b.Name || a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) {
				t.Fatalf("re-parse changed %+v into %+v", a, b)
			}
		}
	})
}

func sameHeader(a, b *Header) bool {
	return maps.Equal(a.Metadata, b.Metadata) && slices.EqualFunc(a.Tensors, b.Tensors, func(x, y TensorInfo) bool {
		return x.Name == y.Name && x.DType == y.DType && slices.Equal(x.Shape, y.Shape) && x.Begin == y.Begin && x.End == y.End
	})
}

func FuzzOpen(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(rawFile(s, make([]byte, 16)))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'})
	f.Add(rawFile(headerSeeds[1], []byte{1, 2, 3}))
	dir := f.TempDir()
	n := 0
	f.Fuzz(func(t *testing.T, b []byte) {
		n++
		p := filepath.Join(dir, fmt.Sprintf("f%d.safetensors", n))
		if err := os.WriteFile(p, b, 0o666); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(p)
		file, err := Open(p)
		if err != nil {
			if file != nil {
				t.Fatal("file and error")
			}
			return
		}
		defer file.Close()
		checkHeader(t, file.Header(), int64(len(file.data)))
		for _, name := range file.Names() {
			tn, err := file.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			info, _ := file.Info(name)
			if int64(len(tn.Data)) != info.Size() {
				t.Fatalf("%q: %d bytes, want %d", name, len(tn.Data), info.Size())
			}
			// Touch every byte through the accessors that apply.
			switch tn.DType {
			case F32, F16, BF16:
				if _, err := tn.Float32s(); err != nil {
					t.Fatal(err)
				}
			case I32:
				_, err = tn.I32()
			case I64:
				_, err = tn.I64()
			case I8:
				_, err = tn.I8()
			case U8:
				_, err = tn.U8()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":6},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../x"}}`))
	f.Add([]byte(`{"weight_map":{"a":"x","a":"y"}}`))
	f.Add([]byte(`{"metadata":null,"weight_map":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := parseIndex(b)
		if err != nil {
			return
		}
		if len(idx.weightMap) == 0 {
			t.Fatal("accepted an empty weight_map")
		}
		for name, shard := range idx.weightMap {
			if !plainFileName(shard) || filepath.Base(shard) != shard {
				t.Fatalf("tensor %q: accepted shard %q", name, shard)
			}
		}
	})
}

// FuzzOpenDirIndex opens a folder of two fixed shards (a and b in the
// first, c in the second, plus a third shard file holding d that no seed
// names) under an arbitrary index, optionally with one shard deleted. What
// OpenDir accepts must be exactly what the index says, read by an exact-key
// reader: the same tensor names, each from the shard the index names, with
// the shard's bytes.
func FuzzOpenDirIndex(f *testing.F) {
	const s1, s2, s3 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "extra.safetensors"
	f.Add([]byte(`{"metadata":{"total_size":6},"weight_map":{"a":"`+s1+`","b":"`+s1+`","c":"`+s2+`"}}`), uint8(0))
	f.Add([]byte(`{"weight_map":{"a":"`+s1+`","b":"`+s1+`","c":"`+s2+`","d":"`+s3+`"}}`), uint8(0))
	f.Add([]byte(`{"weight_map":{"a":"`+s1+`","b":"`+s1+`","c":"`+s2+`"}}`), uint8(2))
	f.Add([]byte(`{"weight_map":{"a":"`+s1+`","b":"`+s2+`","c":"`+s2+`"}}`), uint8(0))
	f.Add([]byte(`{"weight_map":{"a":"`+s1+`","b":"`+s1+`"}}`), uint8(0))
	f.Add([]byte(`{"Weight_Map":{"a":"`+s1+`"},"weight_map":{"a":"`+s1+`","b":"`+s1+`","c":"`+s2+`"}}`), uint8(0))
	f.Add([]byte(`{"weight_map":{"a":"`+s1+`","a":"`+s2+`"}}`), uint8(0))
	f.Add([]byte(`{"weight_map":{"a":"../`+s1+`"}}`), uint8(0))
	f.Fuzz(func(t *testing.T, index []byte, drop uint8) {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, s1), map[string]string{"shard": "1"}, u8Tensor("a", 1), u8Tensor("b", 2, 3))
		mustWrite(t, filepath.Join(dir, s2), map[string]string{"shard": "2"}, u8Tensor("c", 4, 5, 6))
		mustWrite(t, filepath.Join(dir, s3), nil, u8Tensor("d", 7))
		want := map[string][]byte{"a": {1}, "b": {2, 3}, "c": {4, 5, 6}, "d": {7}}
		home := map[string]string{"a": s1, "b": s1, "c": s2, "d": s3}
		if drop %= 4; drop > 0 {
			os.Remove(filepath.Join(dir, []string{s1, s2, s3}[drop-1]))
		}
		if err := os.WriteFile(filepath.Join(dir, IndexFile), index, 0o644); err != nil {
			t.Fatal(err)
		}
		set, err := OpenDir(dir)
		if err != nil {
			return
		}
		defer set.Close()
		var top map[string]json.RawMessage
		var weightMap map[string]string
		if err := json.Unmarshal(index, &top); err != nil {
			t.Fatalf("OpenDir accepted an index that is not a JSON object: %v", err)
		}
		if err := json.Unmarshal(top["weight_map"], &weightMap); err != nil {
			t.Fatalf("OpenDir accepted a weight_map that is not an object of strings: %v", err)
		}
		if names := set.Names(); !slices.Equal(names, slices.Sorted(maps.Keys(weightMap))) {
			t.Fatalf("set holds %q, the index lists %q", names, slices.Sorted(maps.Keys(weightMap)))
		}
		for name, shard := range weightMap {
			if home[name] != shard {
				t.Fatalf("tensor %q accepted from %q, it lives in %q", name, shard, home[name])
			}
			_, file, ok := set.Info(name)
			if !ok || file != filepath.Join(dir, shard) {
				t.Fatalf("Info(%q) = %q, %v; want %q", name, file, ok, shard)
			}
			tn, err := set.Tensor(name)
			if err != nil || !bytes.Equal(tn.Data, want[name]) {
				t.Fatalf("Tensor(%q) = %v, %v; want %v", name, tn, err, want[name])
			}
		}
	})
}
