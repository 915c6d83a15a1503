package guard

import (
	"context"
	"path/filepath"
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
