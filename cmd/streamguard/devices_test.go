package main

import (
	"bytes"
	"encoding/json"
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
