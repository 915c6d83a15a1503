package guard

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestDeviceChoice loads a model with each device setting. On a machine
// without a usable GPU (CI): auto runs on the CPU and says why, cuda fails
// with the reason. Where a GPU takes the model (scripts/gpu-check.sh), auto
// and cuda run on it. Everywhere: cpu is the CPU, a bad name is refused.
func TestDeviceChoice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "bf16", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"", "cpu"} {
		m, err := Load(context.Background(), dir, Options{Device: dev})
		if err != nil {
			t.Fatalf("device %q: %v", dev, err)
		}
		if i := m.Info(); i.Device != "cpu" || i.DeviceNote != "" || i.KVCapacityBytes != 0 {
			t.Errorf("device %q: %q, note %q, KV capacity %d (the CPU's caches grow as needed)", dev, i.Device, i.DeviceNote, i.KVCapacityBytes)
		}
		m.Close()
	}
	if m, err := Load(context.Background(), dir, Options{Device: "cuda"}); err == nil {
		// A GPU takes the model: cuda and auto run on it.
		i := m.Info()
		m.Close()
		if !strings.HasPrefix(i.Device, "cuda:0 (") || i.DeviceNote != "" || i.KVCapacityBytes <= 0 {
			t.Errorf("cuda: device %q, note %q, KV capacity %d", i.Device, i.DeviceNote, i.KVCapacityBytes)
		}
		m, err := Load(context.Background(), dir, Options{Device: "auto"})
		if err != nil {
			t.Fatalf("auto with a GPU: %v", err)
		}
		if i := m.Info(); !strings.HasPrefix(i.Device, "cuda:0 (") || i.DeviceNote != "" {
			t.Errorf("auto with a GPU: device %q, note %q", i.Device, i.DeviceNote)
		}
		m.Close()
	} else {
		m, err := Load(context.Background(), dir, Options{Device: "auto"})
		if err != nil {
			t.Fatalf("auto: %v", err)
		}
		if i := m.Info(); i.Device != "cpu" || i.DeviceNote == "" {
			t.Errorf("auto without a GPU: device %q, note %q", i.Device, i.DeviceNote)
		}
		m.Close()
		for _, dev := range []string{"cuda", "cuda:1"} {
			_, err := Load(context.Background(), dir, Options{Device: dev})
			if err == nil || !strings.Contains(err.Error(), "device "+dev) {
				t.Errorf("device %s without a GPU: %v", dev, err)
			}
		}
	}
	for _, dev := range []string{"tpu", "cuda:-1", "cuda:x"} {
		if _, err := Load(context.Background(), dir, Options{Device: dev}); err == nil || !strings.Contains(err.Error(), "want cpu, auto, cuda or cuda:N") {
			t.Errorf("device %q: %v", dev, err)
		}
	}
}

// TestDeviceAWQLoad: an AWQ model bound for a GPU is loaded for upload
// only — no CPU repacking, no repacked-weights file — and one that auto
// leaves on the CPU (no GPU takes it) is loaded again with its CPU
// weights and judges exactly as a CPU load does.
func TestDeviceAWQLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "How do I bake bread?"}, {Role: "assistant", Content: "Knead, rise, bake."}}
	judge := func(dev string) (Info, *Result, bool) {
		t.Helper()
		m, err := Load(context.Background(), dir, Options{Device: dev})
		if err != nil {
			t.Fatalf("device %q: %v", dev, err)
		}
		defer m.Close()
		r, err := m.Moderate(context.Background(), msgs, nil)
		if err != nil {
			t.Fatalf("device %q: %v", dev, err)
		}
		return m.Info(), r, m.net.UploadOnly()
	}
	packDir := filepath.Join(dir, ".streamguard")
	auto, autoRes, uploadOnly := judge("auto")
	onGPU := strings.HasPrefix(auto.Device, "cuda:")
	t.Logf("auto: %s, network for upload only: %v", auto.Device, uploadOnly)
	if uploadOnly != onGPU {
		t.Errorf("auto on %s: network loaded for upload only = %v", auto.Device, uploadOnly)
	}
	_, statErr := os.Stat(packDir)
	if onGPU && (statErr == nil || auto.RepackCache.Path != "") {
		t.Errorf("auto on the GPU: repacked weights %+v (%v), want none", auto.RepackCache, statErr)
	}
	if !onGPU && !auto.RepackCache.Wrote {
		t.Errorf("auto on the CPU: repacked weights %+v, want written", auto.RepackCache)
	}
	cpu, cpuRes, uploadOnly := judge("cpu")
	if cpu.Device != "cpu" || uploadOnly {
		t.Errorf("cpu: device %q, upload only %v", cpu.Device, uploadOnly)
	}
	if !onGPU && !reflect.DeepEqual(autoRes, cpuRes) {
		t.Errorf("auto on the CPU judged\n%+v\nthe CPU load\n%+v", autoRes, cpuRes)
	}
	if onGPU {
		if autoRes.Prompt.Risk != cpuRes.Prompt.Risk {
			t.Errorf("prompt: GPU %s, CPU %s", autoRes.Prompt.Risk, cpuRes.Prompt.Risk)
		}
		if _, _, uploadOnly := judge("cuda"); !uploadOnly {
			t.Errorf("cuda: network loaded with CPU weights")
		}
	}
}
