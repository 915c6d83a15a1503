package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
)

// TestWriteTextQuotesUntrustedNames: tensor names, __metadata__ and
// config.json strings are the checkpoint's, and `streamguard verify`
// prints them to a terminal (guard.Load puts the problems in its error):
// a raw ESC would let a downloaded model clear the screen, set the title
// or hide lines. Names holding anything not printable are Go-quoted, in
// the table and in the problems alike; printable ones are unchanged.
func TestWriteTextQuotesUntrustedNames(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Architectures = []string{"Qwen3ForCausalLM\x1b[8m"}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	hdr := []byte(`{"\u001b[2J\u001b]0;pwned\u0007model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},` +
		`"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[4,260]},"__metadata__":{"generator":"\u001b[31mok"}}`)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.Write(hdr)
	b.Write(make([]byte, 260))
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := checkpoint.Report(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if i := strings.IndexByte(out.String(), 0x1b); i >= 0 {
		t.Errorf("raw ESC in the text report at byte %d:\n%q", i, out.String())
	}
	// Lines compared with runs of spaces as one (the table's padding).
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	lines := strings.Split(out.String(), "\n")
	for _, want := range []string{
		`"\x1b[2J\x1b]0;pwned\amodel.norm.weight" UNEXPECTED F32 - [1] 4`,
		`model.norm.weight USED F32 plain [64] 256`,
		`Architecture: "Qwen3ForCausalLM\x1b[8m" (not a guard model)`,
		`Generator: "\x1b[31mok" (synthetic weights: preset , seed , dtype )`,
		`- 1 tensor not part of the model (UNEXPECTED): "\x1b[2J\x1b]0;pwned\amodel.norm.weight"`,
	} {
		found := false
		for _, l := range lines {
			found = found || norm(l) == want
		}
		if !found {
			t.Errorf("text report lacks the line\n%s\nreport:\n%s", want, out.String())
		}
	}
	// guard.Load's error is made of the diagnosis and the problems.
	for _, p := range append(r.Problems, r.Diagnosis) {
		if strings.ContainsRune(p, 0x1b) {
			t.Errorf("raw ESC in a problem: %q", p)
		}
	}
	if want := `config.json declares "Qwen3ForCausalLM\x1b[8m" and the folder has none of the 8 guard head tensors`; !strings.HasPrefix(r.Diagnosis, want) {
		t.Errorf("diagnosis %q, want it to begin %q", r.Diagnosis, want)
	}
}
