package main

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestDevices runs devices in this build: the CPU is always listed; the GPU
// line says why there is none (no cuda tag, no driver, or no GPU) unless
// the test runs on a GPU machine with the cuda tag.
func TestDevices(t *testing.T) {
	var out, errb bytes.Buffer
	if code := mainWithArgs([]string{"devices"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "cpu: "+runtime.GOARCH) || !strings.Contains(out.String(), "gpu") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	if code := mainWithArgs([]string{"devices", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errb.String())
	}
	var v struct {
		CPU struct {
			Arch  string `json:"arch"`
			Cores int    `json:"cores"`
		} `json:"cpu"`
		GPUs     []gpuInfo `json:"gpus"`
		GPUError string    `json:"gpu_error"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if v.CPU.Arch != runtime.GOARCH || v.CPU.Cores != runtime.NumCPU() || (len(v.GPUs) == 0) == (v.GPUError == "") {
		t.Errorf("devices --json: %+v", v)
	}
}

// TestDeviceFlag runs moderate with each --device on a machine without a
// usable GPU: auto stays on the CPU and says why on stderr, cuda fails with
// the reason, a bad name is a clear error.
func TestDeviceFlag(t *testing.T) {
	if _, gpus, err := gpuReport(); err == nil && len(gpus) > 0 {
		t.Skip("a GPU is usable here: this test is for machines without one")
	}
	dir := t.TempDir() + "/m"
	var out, errb bytes.Buffer
	if code := mainWithArgs([]string{"gen-model", "--preset", "tiny", "--out", dir}, &out, &errb); code != 0 {
		t.Fatalf("gen-model: exit %d: %s", code, errb.String())
	}
	run := func(dev string) (int, string) {
		out.Reset()
		errb.Reset()
		code := mainWithArgs([]string{"moderate", "--model", dir, "--prompt", "hi", "--device", dev}, &out, &errb)
		return code, errb.String()
	}
	if code, stderr := run("auto"); code != 0 || !strings.HasPrefix(stderr, "device: cpu (auto: ") || !strings.Contains(out.String(), "prompt: ") {
		t.Errorf("--device auto: exit %d, stderr %q, stdout %q", code, stderr, out.String())
	}
	if code, stderr := run("cpu"); code != 0 || stderr != "" {
		t.Errorf("--device cpu: exit %d, stderr %q", code, stderr)
	}
	if code, stderr := run("cuda"); code != 1 || !strings.Contains(stderr, "device cuda: ") {
		t.Errorf("--device cuda: exit %d, stderr %q", code, stderr)
	}
	if code, stderr := run("tpu"); code != 2 || !strings.Contains(stderr, "want cpu, auto, cuda or cuda:N") {
		t.Errorf("--device tpu: exit %d, stderr %q", code, stderr)
	}
}

// TestBenchDevice runs bench with each --device on a machine without a
// usable GPU: auto measures on the CPU and says why in the report and on
// stderr, cuda fails with the reason (no cuda build, no driver, no GPU),
// a bad name is a usage error.
func TestBenchDevice(t *testing.T) {
	if _, gpus, err := gpuReport(); err == nil && len(gpus) > 0 {
		t.Skip("a GPU is usable here: this test is for machines without one")
	}
	var out, errb bytes.Buffer
	run := func(dev string) (int, string) {
		out.Reset()
		errb.Reset()
		code := mainWithArgs([]string{"bench", "--preset", "tiny", "--pp", "8", "--positions", "4", "--streams", "2",
			"--steps", "1", "--bandwidth-mib", "0", "--kv-budget-mib", "1", "--json", "--device", dev}, &out, &errb)
		return code, errb.String()
	}
	code, stderr := run("auto")
	var r struct {
		Device     string `json:"device"`
		DeviceNote string `json:"device_note"`
		Decode     []struct {
			Position int `json:"position"`
		} `json:"decode"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); code != 0 || err != nil {
		t.Fatalf("--device auto: exit %d, %v, stderr %q, stdout %q", code, err, stderr, out.String())
	}
	if r.Device != "cpu" || r.DeviceNote == "" || !strings.Contains(stderr, "device: cpu (auto: "+r.DeviceNote+")") || len(r.Decode) != 1 || r.Decode[0].Position != 4 {
		t.Errorf("--device auto: %+v, stderr %q", r, stderr)
	}
	if code, stderr := run("cpu"); code != 0 || strings.Contains(stderr, "device") || !strings.Contains(out.String(), `"device": "cpu"`) || strings.Contains(out.String(), "device_note") {
		t.Errorf("--device cpu: exit %d, stderr %q, stdout %q", code, stderr, out.String())
	}
	if code, stderr := run("cuda:1"); code != 1 || !strings.Contains(stderr, "--device cuda:1: ") || out.Len() != 0 {
		t.Errorf("--device cuda:1: exit %d, stderr %q, stdout %q", code, stderr, out.String())
	}
	if _, _, gerr := gpuReport(); gerr == errNoCUDA && !strings.Contains(errb.String(), "-tags cuda") {
		t.Errorf("without the cuda tag the error should say how to build one: %q", errb.String())
	}
	if code, stderr := run("tpu"); code != 2 || !strings.Contains(stderr, "want cpu, auto, cuda or cuda:N") {
		t.Errorf("--device tpu: exit %d, stderr %q", code, stderr)
	}
}

// TestForwardAndTrainHeadsDevice: forward and train-heads take --device
// like the other commands that run a model. On a machine without a usable
// GPU, forward --device auto writes bitwise the hidden states and logits of
// --device cpu (and says on stderr why it stayed on the CPU); cuda fails
// with the reason, in both commands.
func TestForwardAndTrainHeadsDevice(t *testing.T) {
	if _, gpus, err := gpuReport(); err == nil && len(gpus) > 0 {
		t.Skip("a GPU is usable here: this test is for machines without one")
	}
	dir := t.TempDir()
	model := dir + "/m"
	var out, errb bytes.Buffer
	if code := mainWithArgs([]string{"gen-model", "--preset", "tiny", "--out", model}, &out, &errb); code != 0 {
		t.Fatalf("gen-model: exit %d: %s", code, errb.String())
	}
	forward := func(dev string) (int, string, string) {
		out.Reset()
		errb.Reset()
		code := mainWithArgs([]string{"forward", "--model", model, "--ids", "9,8,7,6,5", "--device", dev}, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, cpu, stderr := forward("cpu")
	if code != 0 || stderr != "" || !strings.Contains(cpu, `"hidden":[[`) {
		t.Fatalf("forward --device cpu: exit %d, stderr %q, stdout %.200q", code, stderr, cpu)
	}
	code, auto, stderr := forward("auto")
	if code != 0 || auto != cpu || !strings.HasPrefix(stderr, "device: cpu (auto: ") {
		t.Errorf("forward --device auto: exit %d, stderr %q, same output as cpu: %v", code, stderr, auto == cpu)
	}
	if code, _, stderr := forward("cuda"); code != 1 || !strings.Contains(stderr, "device cuda: ") {
		t.Errorf("forward --device cuda: exit %d, stderr %q", code, stderr)
	}
	data := dir + "/d.jsonl"
	if err := os.WriteFile(data, []byte(`{"messages":[{"role":"user","content":"hi"}],"prompt":{"risk":"Safe"}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	code = mainWithArgs([]string{"train-heads", "--model", model, "--data", data, "--out", dir + "/o", "--no-cache", "--quiet", "--device", "cuda"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "device cuda: ") {
		t.Errorf("train-heads --device cuda: exit %d, stderr %q", code, errb.String())
	}
}

// TestDeviceFlagChecked: a device that is none of cpu, auto, cuda and
// cuda:N is a usage error (exit 2) before any model is loaded.
func TestDeviceFlagChecked(t *testing.T) {
	for dev, code := range map[string]int{"gpu": 2, "cuda:": 2, "cuda:x": 2, "cpu ": 2, "cpu": 1, "cuda:1": 1} {
		var out, errb bytes.Buffer
		got := mainWithArgs([]string{"moderate", "--model", t.TempDir() + "/none", "--device", dev, "--prompt", "hi"}, &out, &errb)
		if got != code || code == 2 && !strings.Contains(errb.String(), "want cpu, auto, cuda or cuda:N") {
			t.Errorf("--device %q: exit %d, want %d: %s", dev, got, code, errb.String())
		}
	}
}
