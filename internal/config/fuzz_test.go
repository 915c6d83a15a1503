package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadQuantConfig feeds Load an arbitrary quant_config.json next to a
// config.json without quantization_config (the old AutoAWQ layout). Load
// must not panic, and what it accepts must be what an exact-key reader
// (transformers, jq) reads from the file: the same bits, group size,
// method and version, whatever case-variant or repeated keys the file
// tries. The old spellings (w_bit, q_group_size) are folded in as
// normalize documents.
func FuzzLoadQuantConfig(f *testing.F) {
	dir := f.TempDir()
	c, err := Preset("tiny")
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Write(dir); err != nil {
		f.Fatal(err)
	}
	qpath := filepath.Join(dir, "quant_config.json")
	for _, s := range []string{
		`{"w_bit":4,"q_group_size":128,"zero_point":true,"version":"GEMM"}`,
		`{"quant_method":"awq","bits":4,"group_size":64,"modules_to_not_convert":["a"]}`,
		`{"w_bit":4,"W_BIT":8}`,
		`{"bits":4,"bits":8}`,
		`{"bits":0,"w_bit":4,"Q_Group_Size":32}`,
		`{"version":"gemm","Version":"gemv"}`,
		`{"extra":{"k":1,"k":2}}`,
		`[]`,
		`{"bits":"4"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(qpath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Load(dir)
		if err != nil {
			if !strings.Contains(err.Error(), qpath) {
				t.Fatalf("error does not name quant_config.json: %v", err)
			}
			return
		}
		q := got.QuantizationConfig
		if q == nil {
			t.Fatal("quant_config.json accepted but not loaded")
		}
		if q.WBit != 0 || q.QGroupSize != 0 {
			t.Fatalf("old spellings not folded in: %+v", q)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted a quant_config.json that is not an object: %v", err)
		}
		num := func(k string) int {
			var n int
			json.Unmarshal(m[k], &n)
			return n
		}
		str := func(k string) string {
			var s string
			json.Unmarshal(m[k], &s)
			return s
		}
		wantBits, wantGroup, wantMethod := num("bits"), num("group_size"), str("quant_method")
		if wantBits == 0 {
			wantBits = num("w_bit")
		}
		if wantGroup == 0 {
			wantGroup = num("q_group_size")
		}
		if wantMethod == "" && (num("w_bit") != 0 || num("q_group_size") != 0) {
			wantMethod = "awq"
		}
		if q.Bits != wantBits || q.GroupSize != wantGroup || q.QuantMethod != wantMethod || q.Version != str("version") {
			t.Fatalf("Load read bits %d, group %d, method %q, version %q; the exact keys say %d, %d, %q, %q",
				q.Bits, q.GroupSize, q.QuantMethod, q.Version, wantBits, wantGroup, wantMethod, str("version"))
		}
	})
}
