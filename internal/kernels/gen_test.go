package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedAssemblyUpToDate reruns the avo generator into a temporary
// directory and compares with the checked-in files, ignoring the header
// line that names the output paths. It needs the generator's module
// dependencies (avo) in the module cache or from the proxy; without them
// it skips.
func TestGeneratedAssemblyUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	asm, stubs := filepath.Join(dir, "k.s"), filepath.Join(dir, "stubs.go")
	cmd := exec.Command(goBin, "run", ".", "-out", asm, "-stubs", stubs, "-pkg", "kernels")
	cmd.Dir = "_asm"
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("generator did not run (avo unavailable?): %v\n%s", err, out)
	}
	for _, f := range [][2]string{{asm, "kernels_amd64.s"}, {stubs, "kernels_stubs_amd64.go"}} {
		got, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(f[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dropFirstLine(got), dropFirstLine(want)) {
			t.Errorf("%s is stale: run go generate ./internal/kernels", f[1])
		}
	}
}

func dropFirstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return nil
}
