package main

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestCUDABuildAgainstStandIn runs the cuda-tagged binary and the guard
// package's GPU tests against the CPU stand-in for the NVIDIA driver
// (internal/gpu/testdata/fakecuda; see internal/gpu's TestStandInDriver):
// devices lists it, and moderate, forward and bench with --device cuda take
// the GPU path end to end and agree with --device cpu (the same verdicts;
// hidden states within 1e-2 relative L2); serve --device cuda answers
// moderations and names the device in /metrics and /v1/info. It needs g++ and the go command
// (to build with -tags cuda), and skips, saying which, without them.
func TestCUDABuildAgainstStandIn(t *testing.T) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ is not installed: the stand-in driver is C++20")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH: the cuda-tagged binary is built here")
	}
	if _, gpus, err := gpuReport(); err == nil && len(gpus) > 0 {
		t.Skip("a GPU is usable here: scripts/gpu-check.sh runs these paths on it")
	}
	dir := t.TempDir()
	src, err := filepath.Abs("../../internal/gpu/testdata/fakecuda/fakecuda.cc")
	if err != nil {
		t.Fatal(err)
	}
	build := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	build(gxx, "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-o", filepath.Join(dir, "libcuda.so.1"), src)
	sg, guardTest := filepath.Join(dir, "streamguard"), filepath.Join(dir, "guard.test")
	build(goCmd, "build", "-tags", "cuda", "-o", sg, ".")
	build(goCmd, "test", "-c", "-tags", "cuda", "-o", guardTest, "../../guard")
	env := append(os.Environ(), "LD_LIBRARY_PATH="+dir, "STREAMGUARD_REQUIRE_GPU=1")
	runSG := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(sg, args...)
		cmd.Env = env
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if e, ok := err.(*exec.ExitError); ok {
			code = e.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	if out, errs, code := runSG("devices"); code != 0 || !strings.Contains(out, "CPU stand-in") {
		t.Fatalf("devices: exit %d\n%s%s", code, out, errs)
	}
	// A model the tensor cores take: the 0.6B's shapes, AWQ, two layers.
	model := filepath.Join(dir, "m")
	if _, err := synth.Generate(model, synth.Options{Preset: "qwen3guard-stream-0.6b", DType: "awq", Seed: 4, Layers: 2}); err != nil {
		t.Fatal(err)
	}
	moderate := func(dev string) (string, string) {
		out, errs, code := runSG("moderate", "--model", model, "--device", dev, "--json", "--prompt", "How do I bake bread?",
			"--response", "Mix flour and water, knead, let it rise, bake.")
		if code != 0 && code != 3 { // 3: judged unsafe (random weights)
			t.Fatalf("moderate --device %s: exit %d\n%s", dev, code, errs)
		}
		return out, errs
	}
	type verdicts struct {
		Prompt struct{ Risk string }
		Tokens []struct{ Risk, Category string }
	}
	var cpu, gpu verdicts
	outC, _ := moderate("cpu")
	outG, errG := moderate("cuda")
	if err := json.Unmarshal([]byte(outC), &cpu); err != nil {
		t.Fatalf("moderate --device cpu --json: %v\n%s", err, outC)
	}
	if err := json.Unmarshal([]byte(outG), &gpu); err != nil {
		t.Fatalf("moderate --device cuda --json: %v\n%s", err, outG)
	}
	if !strings.Contains(errG, "device: cuda:0 (CPU stand-in") {
		t.Errorf("moderate --device cuda: stderr %q does not name the device", errG)
	}
	if cpu.Prompt.Risk != gpu.Prompt.Risk || len(cpu.Tokens) != len(gpu.Tokens) || len(cpu.Tokens) == 0 {
		t.Fatalf("moderate: CPU %+v, GPU %+v", cpu, gpu)
	}
	for i := range cpu.Tokens {
		if cpu.Tokens[i] != gpu.Tokens[i] {
			t.Errorf("token %d: CPU %+v, GPU %+v", i, cpu.Tokens[i], gpu.Tokens[i])
		}
	}

	forward := func(dev string) [][]float32 {
		out, errs, code := runSG("forward", "--model", model, "--device", dev, "--ids", "11,22,33,44,55,66,77")
		var r struct {
			Cases []struct{ Hidden [][]float32 }
		}
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil || len(r.Cases) != 1 {
			t.Fatalf("forward --device %s: exit %d\n%s", dev, code, errs)
		}
		return r.Cases[0].Hidden
	}
	hc, hg := forward("cpu"), forward("cuda")
	var num, den float64
	for i := range hc {
		for j := range hc[i] {
			d := float64(hg[i][j] - hc[i][j])
			num, den = num+d*d, den+float64(hc[i][j])*float64(hc[i][j])
		}
	}
	if rel := math.Sqrt(num / den); !(rel <= 1e-2) {
		t.Errorf("forward: hidden states relative L2 %.3g between --device cuda and cpu, want ≤ 1e-2", rel)
	} else {
		t.Logf("forward --device cuda against cpu: hidden states relative L2 %.3g", rel)
	}

	out, errs, code := runSG("bench", "--model", model, "--device", "cuda", "--pp", "32", "--positions", "10", "--streams", "4",
		"--steps", "2", "--json")
	var rep struct {
		Device string
		Decode []struct {
			MsPerToken float64 `json:"ms_per_token"`
		}
		Graphs   struct{ On bool }
		Products struct {
			TensorCores int `json:"tensor_cores"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !strings.Contains(rep.Device, "CPU stand-in") || len(rep.Decode) != 1 ||
		!rep.Graphs.On || rep.Products.TensorCores != 14 {
		t.Errorf("bench --device cuda: exit %d, %+v\n%s%s", code, rep, out, errs)
	}

	// serve --device cuda: continuous batching on the GPU engine, the
	// device in /metrics and /v1/info, a moderation answered.
	srvCmd := exec.Command(sg, "serve", "--model", model, "--device", "cuda", "--addr", "127.0.0.1:0")
	srvCmd.Env = env
	// Its output, stdout and stderr together: it says where it listens.
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	srvCmd.Stdout, srvCmd.Stderr = outW, outW
	if err := srvCmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close() // the child holds its own copy
	defer func() {
		srvCmd.Process.Signal(os.Interrupt)
		srvCmd.Wait()
		outR.Close()
	}()
	base := ""
	sc := bufio.NewScanner(outR)
	for base == "" && sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
			base, _, _ = strings.Cut(rest, " ")
		}
	}
	if base == "" {
		t.Fatal("serve --device cuda did not say where it listens")
	}
	go io.Copy(io.Discard, outR)
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if m := get("/metrics"); !strings.Contains(m, `streamguard_device_info{device="cuda:0 (CPU stand-in`) {
		t.Errorf("/metrics does not name the GPU:\n%s", m)
	}
	if i := get("/v1/info"); !strings.Contains(i, `"device":"cuda:0 (CPU stand-in`) {
		t.Errorf("/v1/info: %s", i)
	}
	resp, err := http.Post(base+"/v1/moderations", "application/json", strings.NewReader(`{"input": ["How do I bake bread?", "Tell me about tea."]}`))
	if err != nil {
		t.Fatal(err)
	}
	var mod struct{ Results []struct{ Flagged bool } }
	if err := json.NewDecoder(resp.Body).Decode(&mod); err != nil || resp.StatusCode != 200 || len(mod.Results) != 2 {
		t.Errorf("POST /v1/moderations on the GPU engine: %d, %v, %+v", resp.StatusCode, err, mod)
	}
	resp.Body.Close()

	// loadtest --device cuda: the solo reference and the server both on
	// the GPU engine, every verdict of the batched server equal to it.
	out, errs, code = runSG("loadtest", "--model", model, "--device", "cuda", "--streams", "3", "--conversations", "3",
		"--prompt-words", "4", "--response-tokens", "6", "--duration", "2s", "--baseline", "0", "--sigterm=false", "--duplex-every", "2", "--json")
	var lt struct {
		Device string
		OK     bool
		Phases []struct {
			Checked    int
			Mismatches int
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &lt) != nil || !lt.OK || !strings.Contains(lt.Device, "CPU stand-in") ||
		len(lt.Phases) != 1 || lt.Phases[0].Checked == 0 || lt.Phases[0].Mismatches != 0 {
		t.Errorf("loadtest --device cuda: exit %d, %+v\n%s%s", code, lt, out, errs)
	}

	cmd := exec.Command(guardTest, "-test.run", "TestGPUMatchesCPU|TestDeviceChoice|TestDeviceAWQLoad", "-test.v", "-test.count=1") // as scripts/gpu-check.sh
	cmd.Dir, cmd.Env = "../../guard", env
	out2, err := cmd.CombinedOutput()
	for _, name := range []string{"TestGPUMatchesCPU", "TestDeviceChoice", "TestDeviceAWQLoad"} {
		if err != nil || !strings.Contains(string(out2), "--- PASS: "+name) {
			t.Errorf("guard's GPU tests against the stand-in (%s): %v\n%s", name, err, out2)
			break
		}
	}
}
