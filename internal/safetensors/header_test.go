package safetensors

import (
	"slices"
	"strings"
	"testing"
)

func TestParseHeaderValid(t *testing.T) {
	hdr := `{"__metadata__":{"format":"pt","note":"x"},` +
		`"z":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},` +
		`"a":{"shape":[],"dtype":"BF16","data_offsets":[0,2],"extra":{"k":[1,2,{"n":null}]}},` +
		`"empty":{"dtype":"I64","shape":[0,7],"data_offsets":[2,2]}}    `
	h, err := ParseHeader([]byte(hdr), 40)
	if err != nil {
		t.Fatal(err)
	}
	want := []TensorInfo{
		{Name: "a", DType: BF16, Shape: []int{}, Begin: 0, End: 2},
		{Name: "empty", DType: I64, Shape: []int{0, 7}, Begin: 2, End: 2},
		{Name: "z", DType: F32, Shape: []int{2, 3}, Begin: 8, End: 32},
	}
	if len(h.Tensors) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(h.Tensors), len(want))
	}
	for i, w := range want {
		g := h.Tensors[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || g.Begin != w.Begin || g.End != w.End {
			t.Errorf("tensor %d = %+v, want %+v", i, g, w)
		}
	}
	if h.Metadata["format"] != "pt" || h.Metadata["note"] != "x" || len(h.Metadata) != 2 {
		t.Errorf("metadata = %v", h.Metadata)
	}
	if got := h.Tensors[0].Numel(); got != 1 {
		t.Errorf("scalar numel = %d, want 1", got)
	}
	if got := h.Tensors[2].Numel(); got != 6 {
		t.Errorf("numel = %d, want 6", got)
	}
	if got := h.DataSize(); got != 32 {
		t.Errorf("DataSize = %d, want 32", got)
	}
	if info, ok := h.Lookup("z"); !ok || info.End != 32 {
		t.Errorf("Lookup(z) = %+v, %v", info, ok)
	}
	if _, ok := h.Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
}

func TestParseHeaderEdgeCases(t *testing.T) {
	for _, hdr := range []string{
		`{}`,
		` {} `,
		`{"__metadata__":null}`,
		`{"__metadata__":{}}`,
		// Gaps between tensors are allowed; only overlap is not.
		`{"a":{"dtype":"U8","shape":[1],"data_offsets":[4,5]}}`,
		// Empty tensors may sit anywhere, even inside another's range.
		`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}}`,
		// A zero dimension makes huge other dimensions harmless.
		`{"a":{"dtype":"F64","shape":[9223372036854775807,0,9223372036854775807],"data_offsets":[0,0]}}`,
	} {
		for _, viaDecoder := range []bool{false, true} {
			if _, err := parseHeader([]byte(hdr), 8, viaDecoder); err != nil {
				t.Errorf("parseHeader(%s, viaDecoder=%v): %v", hdr, viaDecoder, err)
			}
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	const w = `"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	tests := []struct {
		name, hdr string
		want      []string
	}{
		{"truncated JSON", `{"w":{"dtype":"F32"`, []string{`tensor "w"`, "invalid header", "unexpected end of JSON"}},
		{"syntax", `{"w" 1}`, []string{"invalid header", "invalid JSON at byte"}},
		{"not an object", `[]`, []string{`expected "{"`}},
		{"trailing garbage", `{` + w + `} x`, []string{"trailing bytes"}},
		{"second value", `{}{}`, []string{`trailing "{"`}},
		{"NUL padding", "{}\x00\x00", []string{"trailing bytes"}},
		{"bad UTF-8", "{\"\xff\":1}", []string{"not valid UTF-8"}},
		{"unknown dtype", `{"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, `unsupported dtype "Q4_K"`}},
		{"sub-byte dtype", `{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}`, []string{`tensor "w"`, `unsupported dtype "F4"`}},
		{"dtype not string", `{"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "dtype must be a string"}},
		{"negative dim", `{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "non-negative integer", "-2"}},
		{"fractional dim", `{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "1.5"}},
		{"exponent dim", `{"w":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "2e0"}},
		{"dim past int64", `{"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "below 2^63"}},
		{"shape not array", `{"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, []string{`tensor "w"`, `shape: expected "["`}},
		{"numel overflow", `{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "overflows"}},
		{"bytes overflow", `{"w":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "overflows"}},
		{"size mismatch", `{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "span 8 bytes, but shape [3] of F32 needs 12"}},
		{"end past data", `{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, []string{`tensor "w"`, "[0, 16] exceed the 8-byte data buffer"}},
		{"begin after end", `{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}}`, []string{`tensor "w"`, "end before they begin"}},
		{"one offset", `{"w":{"dtype":"U8","shape":[0],"data_offsets":[0]}}`, []string{`tensor "w"`, "two integers"}},
		{"three offsets", `{"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0,0]}}`, []string{`tensor "w"`, "two integers"}},
		{"negative offset", `{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, []string{`tensor "w"`, "non-negative"}},
		{"overlap", `{` + w + `,"v":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, []string{`tensor "v"`, `overlap tensor "w" at [0, 8]`}},
		{"same range", `{` + w + `,"v":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, `overlap tensor "v"`}},
		{"duplicate tensor", `{` + w + `,` + w + `}`, []string{`tensor "w"`, "duplicate tensor name"}},
		{"duplicate field", `{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, `duplicate field "dtype"`}},
		{"missing dtype", `{"w":{"shape":[2],"data_offsets":[0,8]}}`, []string{`tensor "w"`, "missing dtype"}},
		{"missing shape", `{"w":{"dtype":"F32","data_offsets":[0,8]}}`, []string{`tensor "w"`, "missing shape"}},
		{"missing offsets", `{"w":{"dtype":"F32","shape":[2]}}`, []string{`tensor "w"`, "missing data_offsets"}},
		{"entry not object", `{"w":[1]}`, []string{`tensor "w"`, `expected "{"`}},
		{"metadata number", `{"__metadata__":{"k":1}}`, []string{`__metadata__ value for key "k" must be a string`}},
		{"metadata nested", `{"__metadata__":{"k":{"a":"b"}}}`, []string{`__metadata__ value for key "k" must be a string`}},
		{"metadata duplicate", `{"__metadata__":{"k":"a","k":"b"}}`, []string{`__metadata__: duplicate key "k"`}},
		{"metadata array", `{"__metadata__":["a"]}`, []string{"__metadata__ must be an object of strings"}},
		{"metadata twice", `{"__metadata__":{},"__metadata__":{}}`, []string{"duplicate __metadata__"}},
		{"rank", `{"w":{"dtype":"U8","shape":[` + strings.Repeat("1,", 64) + `1],"data_offsets":[0,1]}}`, []string{`tensor "w"`, "more than 64 dimensions"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader([]byte(tc.hdr), 8)
			if h != nil {
				t.Errorf("got a header with an error")
			}
			wantErr(t, err, tc.want...)
			// The json.Decoder path reports the same.
			_, err2 := parseHeader([]byte(tc.hdr), 8, true)
			if err2 == nil || err2.Error() != err.Error() {
				t.Errorf("decoder path: %v", err2)
			}
		})
	}
}

func TestParseHeaderBounds(t *testing.T) {
	_, err := ParseHeader(make([]byte, MaxHeaderSize+1), 0)
	wantErr(t, err, "over the 104857600-byte limit")
	_, err = ParseHeader([]byte(`{}`), -1)
	wantErr(t, err, "negative data buffer length")
}

func TestErrorType(t *testing.T) {
	_, err := ParseHeader([]byte(`{"w":{"dtype":"X","shape":[],"data_offsets":[0,0]}}`), 0)
	e, ok := err.(*Error)
	if !ok || e.Tensor != "w" || e.File != "" {
		t.Fatalf("err = %#v, want *Error for tensor w", err)
	}
}
