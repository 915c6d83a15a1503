package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawFile frames header (used verbatim, no padding added) and data the
// way the format lays them out.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func writeTemp(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o666); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantErr fails unless err is non-nil and its message holds every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func mustWrite(t testing.TB, path string, meta map[string]string, ts ...*Tensor) {
	t.Helper()
	if err := WriteFile(path, meta, ts); err != nil {
		t.Fatal(err)
	}
}

func u8Tensor(name string, data ...byte) *Tensor {
	return &Tensor{Name: name, DType: U8, Shape: []int{len(data)}, Data: data}
}
