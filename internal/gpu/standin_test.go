package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStandInDriver runs the backend's GPU tests against a CPU stand-in for
// the NVIDIA driver (testdata/fakecuda: the driver API over host memory,
// each kernel a plain reference of its contract, graphs recorded and
// replayed). It checks on any machine with g++ what the GPU tests check of
// the Go side — uploads, layouts, workspace offsets, fused products,
// attention metadata, streams, graphs, the hidden-state copy, Bench — end
// to end against the CPU engine; the CUDA kernels themselves are checked by
// TestMMAEmulated, TestAttentionEmulated and on a GPU. The tests run in a
// child process (this test binary again) that finds the stand-in as
// libcuda.so.1 on LD_LIBRARY_PATH, with STREAMGUARD_REQUIRE_GPU set so
// that none of them can skip for want of a GPU.
func TestStandInDriver(t *testing.T) {
	dir, out := runStandIn(t, "1", nil, "TestForwardMatchesCPU", "TestBatchInvariance", "TestGraphsMatchDirect", "TestCacheExhaustion", "TestReport")
	report := filepath.Join(dir, "report.json")
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"tiny-awq:warps"`) || !strings.Contains(string(b), `"recompute"`) {
		t.Errorf("report: %v\n%s", err, b)
	}
	logResults(t, out)
}

// TestStandInDriverSource runs the GPU tests against the stand-in driver
// built with the backend's CUDA sources themselves (kernels.cu, mma.cuh,
// attn.cuh) in place of its contract references: compiled for the CPU
// with testdata/mmaemu/emu.h, each GPU thread a fiber, each launch with
// the grid, block and parameters the Go side gives the driver, read with
// the types of the kernel's signature. So the very code a GPU would run
// computes the whole forward — embedding, norms, RoPE and the paged
// cache, tensor-core products (bf16 and AWQ, every tile height), both
// attention kernels, the heads — and meets the GPU tests' bounds against
// the CPU engine, batch invariance bit for bit, and graphs against direct
// launches; and each kernel meets the kernel tests' bounds on their edge
// shapes. The models are tiny and the narrow shape (realShape); every
// kernel of the PTX must have run, but add_bias (no projection of these
// models has a bias). What stays for a GPU: the hardware's own arithmetic
// (tensor-core summation order, fast exponentials), blocks running at the
// same time (here they run one by one, in a shuffled order), timing, and
// whatever the compiler makes of the source differently for the GPU.
func TestStandInDriverSource(t *testing.T) {
	// -fsanitize=alignment: a vector load at an address its type's CUDA
	// alignment does not divide (a fault on a GPU) aborts the run.
	dir, out := runStandIn(t, "source", []string{"-DSTANDIN_SOURCE", "-Wno-unknown-pragmas", "-Wno-sign-compare",
		"-fsanitize=alignment", "-fno-sanitize-recover=alignment", "-Itestdata/mmaemu/include", "testdata/fakecuda/source.cc"},
		"TestForwardMatchesCPU", "TestBatchInvariance", "TestGraphsMatchDirect", "TestCacheExhaustion",
		"TestKernelRMSNormQKPrep", "TestKernelMatMul", "TestKernelAttention", "TestKernelMMA", "TestKernelAttentionMMA")
	b, err := os.ReadFile(filepath.Join(dir, "launched.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for _, k := range strings.Fields(string(b)) {
		ran[k] = true
	}
	for _, k := range ptxEntries(t, ptxSM90) {
		if !ran[k] && k != "add_bias" {
			t.Errorf("kernel %s never ran from its source", k)
		}
	}
	logResults(t, out)
}

// runStandIn builds the stand-in driver (fakecuda.cc and the extra
// compiler arguments) as libcuda.so.1 and runs the named tests in a child
// process (this test binary again) that finds it on LD_LIBRARY_PATH, with
// STREAMGUARD_GPU_STAND_IN=mode and STREAMGUARD_REQUIRE_GPU set so that
// none of them can skip for want of a GPU; every test must pass. It
// returns the directory of the child's files and its output.
func runStandIn(t *testing.T, mode string, extra []string, tests ...string) (string, string) {
	t.Helper()
	if os.Getenv("STREAMGUARD_GPU_STAND_IN") != "" {
		t.Skip("already inside a stand-in run")
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ is not installed: the stand-in driver is C++20")
	}
	if _, err := openGPUQuiet(); err == nil {
		t.Skip("a real GPU is usable here: the GPU tests run against it instead")
	}
	dir := t.TempDir()
	lib := filepath.Join(dir, "libcuda.so.1")
	args := append([]string{"-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-Wall", "-o", lib, "testdata/fakecuda/fakecuda.cc"}, extra...)
	if out, err := exec.Command(gxx, args...).CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in driver: %v\n%s", err, out)
	}
	cmd := exec.Command(os.Args[0], "-test.count=1", "-test.v", "-test.run", "^("+strings.Join(tests, "|")+")$")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir, "STREAMGUARD_GPU_STAND_IN="+mode, "STREAMGUARD_REQUIRE_GPU=1",
		"STREAMGUARD_GPU_REPORT="+filepath.Join(dir, "report.json"), "STREAMGUARD_GPU_PRESETS=tiny,tiny-awq",
		"STREAMGUARD_STANDIN_LAUNCHED="+filepath.Join(dir, "launched.txt"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the GPU tests against the stand-in driver: %v\n%s", err, out)
	}
	for _, name := range tests {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass against the stand-in:\n%s", name, out)
		}
	}
	return dir, string(out)
}

// logResults repeats the child's agreement figures and results.
func logResults(t *testing.T, out string) {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "relative L2") || strings.Contains(line, "graphs:") || strings.HasPrefix(line, "--- ") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
