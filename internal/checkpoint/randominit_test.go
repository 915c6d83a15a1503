package checkpoint_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
)

// sparseLMHead writes dir/model.safetensors holding only an F32
// lm_head.weight of shape [rows, cols], as a sparse file: no disk used.
func sparseLMHead(t *testing.T, dir string, rows, cols int) {
	t.Helper()
	size := int64(rows) * int64(cols) * 4
	hdr := fmt.Appendf(nil, `{"lm_head.weight":{"dtype":"F32","shape":[%d,%d],"data_offsets":[0,%d]}}`, rows, cols, size)
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pre [8]byte
	binary.LittleEndian.PutUint64(pre[:], uint64(len(hdr)))
	if _, err := f.Write(append(pre[:], hdr...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8 + int64(len(hdr)) + size); err != nil {
		t.Fatal(err)
	}
}

// TestLMHeadSampleNeedsConfigShape: the random-init heuristic reads 32
// rows of lm_head at a time, so its buffer is sized by the row length. It
// samples only an lm_head of the shape a valid config.json gives it,
// [vocab_size, hidden_size] (hidden_size is at most 32768), never one the
// header alone vouches for: a sparse [32, 2^22] lm_head would make a 512
// MiB "sample", [1, 2^33] 32 GiB.
func TestLMHeadSampleNeedsConfigShape(t *testing.T) {
	tiny, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		write func(dir string) error
		want  string
	}{
		{"valid config", tiny.Write,
			"HEURISTIC not run on lm_head.weight: shape [32, 4194304] is not [vocab_size, hidden_size] = [151936, 64] from config.json"},
		{"invalid config", func(dir string) error { return os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644) },
			"HEURISTIC not run on lm_head.weight: config.json is not valid (see the problems), so the shape of lm_head.weight cannot be checked"},
	} {
		dir := t.TempDir()
		if err := tc.write(dir); err != nil {
			t.Fatal(err)
		}
		sparseLMHead(t, dir, 32, 1<<22)
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		r, err := checkpoint.Report(dir)
		runtime.ReadMemStats(&m1)
		if err != nil {
			t.Fatal(err)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: Report of a sparse 512 MiB lm_head allocated %d MiB", tc.name, alloc>>20)
		}
		if len(r.Heuristics) != 1 || r.Heuristics[0].Message != tc.want || r.Heuristics[0].Stats != nil || r.Heuristics[0].Flagged {
			t.Errorf("%s: heuristics %+v\nwant the message %s", tc.name, r.Heuristics, tc.want)
		}
	}
}
