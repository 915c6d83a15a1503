package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ptxSources are the CUDA sources of the PTX, hashed in this order (gen.sh).
var ptxSources = []string{"kernels.cu", "mma.cuh", "attn.cuh"}

// TestPTXCurrent fails when a CUDA source changed and the embedded PTX was
// not regenerated (go generate ./internal/gpu).
func TestPTXCurrent(t *testing.T) {
	h := sha256.New()
	for _, name := range ptxSources {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(src)
	}
	sum := h.Sum(nil)
	want := hex.EncodeToString(sum[:])
	for name, ptx := range map[string]string{"kernels_sm80.ptx": ptxSM80, "kernels_sm90.ptx": ptxSM90} {
		got, compiler := ptxHeader(ptx)
		if got != want {
			t.Errorf("%s was generated from sources of hash %s, they are now %s: run go generate ./internal/gpu", name, got, want)
		}
		if compiler == "" {
			t.Errorf("%s: no compiler line in its header", name)
		}
		for _, k := range []string{"embed_bf16", "rmsnorm", "qk_prep", "matmul_bf16", "silu_mul", "silu_mul_rows", "add_inplace", "attention", "mma_bf16_m16", "mma_bf16_m64", "mma_awq_m16", "mma_awq_m64", "mma_bf16_s", "mma_awq_s", "attn_chunk", "attn_merge"} {
			if !strings.Contains(ptx, ".entry "+k+"(") {
				t.Errorf("%s lacks kernel %s", name, k)
			}
		}
	}
}

// TestPTXRegenerates compiles kernels.cu again where nvcc is installed and
// compares the result with the embedded PTX byte for byte.
func TestPTXRegenerates(t *testing.T) {
	nvcc, err := exec.LookPath("nvcc")
	if err != nil {
		t.Skip("nvcc is not installed: only the source hash is checked (TestPTXCurrent)")
	}
	out, err := exec.Command(nvcc, "--version").Output()
	if err != nil {
		t.Fatalf("nvcc --version: %v", err)
	}
	m := regexp.MustCompile(`release ([0-9.]+),`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("cannot read the version of nvcc: %s", out)
	}
	for arch, ptx := range map[string]string{"80": ptxSM80, "90": ptxSM90} {
		_, compiler := ptxHeader(ptx)
		if ver, _, _ := strings.Cut(compiler, " "); ver != string(m[1]) {
			t.Logf("compute_%s: the PTX was made by nvcc %s, this is nvcc %s: not compared", arch, ver, m[1])
			continue
		}
		dst := filepath.Join(t.TempDir(), "k.ptx")
		if out, err := exec.Command(nvcc, "-ptx", "-arch=compute_"+arch, "-O3", "-o", dst, "kernels.cu").CombinedOutput(); err != nil {
			t.Fatalf("nvcc: %v\n%s", err, out)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		_, body, _ := strings.Cut(ptx, "\n// nvcc: ")
		_, body, _ = strings.Cut(body, "\n")
		if string(got) != body {
			t.Errorf("compute_%s: nvcc's output differs from the embedded PTX: run go generate ./internal/gpu", arch)
		}
	}
}

// TestPTXAssembles runs ptxas (CUDA 11.8 or later; no GPU needed) on the
// embedded PTX for sm_80 and sm_90, as the driver's JIT will on those GPUs:
// it must assemble, and no kernel may spill registers to local memory.
func TestPTXAssembles(t *testing.T) {
	ptxas, err := exec.LookPath("ptxas")
	if err != nil {
		t.Skip("ptxas is not installed: the driver assembles the PTX on the GPU machine")
	}
	for arch, ptx := range map[string]string{"80": ptxSM80, "90": ptxSM90} {
		dir := t.TempDir()
		src := filepath.Join(dir, "k.ptx")
		if err := os.WriteFile(src, []byte(ptx), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ptxas, "-arch=sm_"+arch, "-v", "-o", filepath.Join(dir, "k.cubin"), src).CombinedOutput()
		if err != nil {
			t.Fatalf("ptxas sm_%s: %v\n%s", arch, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "spill") && !strings.Contains(line, " 0 bytes spill stores, 0 bytes spill loads") {
				t.Errorf("sm_%s: %s", arch, strings.TrimSpace(line))
			}
		}
		// A kernel's declared largest block (__launch_bounds__) must fit
		// the 64 Ki registers a block may hold, at the registers ptxas
		// gives a thread.
		bounds := maxThreads(ptx)
		entry, used := regexp.MustCompile(`entry function '([A-Za-z_0-9]+)'`), regexp.MustCompile(`Used ([0-9]+) registers`)
		fn := ""
		for _, line := range strings.Split(string(out), "\n") {
			if m := entry.FindStringSubmatch(line); m != nil {
				fn = m[1]
			}
			m := used.FindStringSubmatch(line)
			if m == nil || bounds[fn] == 0 {
				continue
			}
			regs, _ := strconv.Atoi(m[1])
			if regs*bounds[fn] > 65536 {
				t.Errorf("sm_%s: %s uses %d registers a thread: a block of %d threads needs %d, over 65536", arch, fn, regs, bounds[fn], regs*bounds[fn])
			}
		}
		if bounds["rmsnorm"] != 1024 || bounds["mma_awq_m64"] != 128 {
			t.Errorf("sm_%s: launch bounds %v; want rmsnorm 1024 and the tensor-core kernels 128", arch, bounds)
		}
	}
}

// maxThreads maps each kernel of a PTX module that declares its largest
// block (.maxntid x, y, z) to x·y·z.
func maxThreads(ptx string) map[string]int {
	bounds := map[string]int{}
	re := regexp.MustCompile(`\.entry ([A-Za-z_0-9]+)\((?s:[^{]*?)\.maxntid ([0-9]+), ([0-9]+), ([0-9]+)`)
	for _, m := range re.FindAllStringSubmatch(ptx, -1) {
		x, _ := strconv.Atoi(m[2])
		y, _ := strconv.Atoi(m[3])
		z, _ := strconv.Atoi(m[4])
		bounds[m[1]] = x * y * z
	}
	return bounds
}

// ptxEntries lists the kernels (.entry) of a PTX module, in its order.
func ptxEntries(t *testing.T, ptx string) []string {
	t.Helper()
	var names []string
	for _, m := range regexp.MustCompile(`\.entry ([A-Za-z_0-9]+)\(`).FindAllStringSubmatch(ptx, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatal("no .entry in the PTX")
	}
	return names
}

// TestPTXDriverVersion: the driver version Upload requires covers the PTX
// ISA of every build of the kernels, so that a regenerated PTX of a newer
// ISA cannot pass the check and fail at load on an older driver.
func TestPTXDriverVersion(t *testing.T) {
	for _, cc := range [][2]int{{8, 0}, {9, 0}} {
		src, err := PTX(cc[0], cc[1])
		if err != nil {
			t.Fatal(err)
		}
		need, err := ptxDriverVersion(src)
		if err != nil {
			t.Fatal(err)
		}
		if need > MinDriverVersion {
			t.Errorf("sm_%d%d: the PTX needs CUDA %d, above MinDriverVersion %d", cc[0], cc[1], need, MinDriverVersion)
		}
	}
	for ptx, want := range map[string]int{".version 7.8\n": 11080, "// x\n.version 8.0\n.target sm_90\n": 12000, ".version 7.0": 11000} {
		if got, err := ptxDriverVersion(ptx); err != nil || got != want {
			t.Errorf("ptxDriverVersion(%q) = %d, %v; want %d", ptx, got, err, want)
		}
	}
}
