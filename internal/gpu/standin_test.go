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
	if os.Getenv("STREAMGUARD_GPU_STAND_IN") != "" {
		t.Skip("already inside the stand-in run")
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ is not installed: the stand-in driver is C++20")
	}
	if _, err := openGPUQuiet(); err == nil {
		t.Skip("a real GPU is usable here: the GPU tests run against it instead")
	}
	dir := t.TempDir()
	src, err := filepath.Abs("testdata/fakecuda/fakecuda.cc")
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libcuda.so.1")
	if out, err := exec.Command(gxx, "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-Wall", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in driver: %v\n%s", err, out)
	}
	report := filepath.Join(dir, "report.json")
	cmd := exec.Command(os.Args[0], "-test.count=1", "-test.v",
		"-test.run", "^(TestForwardMatchesCPU|TestBatchInvariance|TestGraphsMatchDirect|TestCacheExhaustion|TestReport)$")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir, "STREAMGUARD_GPU_STAND_IN=1", "STREAMGUARD_REQUIRE_GPU=1",
		"STREAMGUARD_GPU_REPORT="+report, "STREAMGUARD_GPU_PRESETS=tiny,tiny-awq")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the GPU tests against the stand-in driver: %v\n%s", err, out)
	}
	// Every test ran (none skipped) and the report was written.
	for _, name := range []string{"TestForwardMatchesCPU", "TestBatchInvariance", "TestGraphsMatchDirect", "TestCacheExhaustion", "TestReport"} {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass against the stand-in:\n%s", name, out)
		}
	}
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"tiny-awq:warps"`) || !strings.Contains(string(b), `"recompute"`) {
		t.Errorf("report: %v\n%s", err, b)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "relative L2") || strings.Contains(line, "graphs:") || strings.HasPrefix(line, "--- ") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
