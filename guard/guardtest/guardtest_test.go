package guardtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/guard/guardtest"
)

func TestModelDirLoads(t *testing.T) {
	dir := guardtest.ModelDir(t, guardtest.Options{Seed: 1})
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if info := m.Info(); info.Layers != 2 || len(info.Labels.ResponseCategory) == 0 {
		t.Errorf("tiny model: %+v", info)
	}
	pv, err := m.NewStream().JudgePrompt(context.Background(), []guard.Message{{Role: "user", Content: "hi"}})
	if err != nil || pv.Position <= 0 {
		t.Fatalf("prompt verdict %+v, %v", pv, err)
	}
	// The same options write the same weights.
	again := guardtest.ModelDir(t, guardtest.Options{Seed: 1})
	a, errA := os.ReadFile(dir + "/model.safetensors")
	b, errB := os.ReadFile(again + "/model.safetensors")
	if errA != nil || errB != nil || string(a) != string(b) {
		t.Errorf("two writes of seed 1 differ (%v, %v)", errA, errB)
	}
	if err := guardtest.WriteModel(dir, guardtest.Options{}); err == nil {
		t.Error("WriteModel over a model accepted")
	}
	if err := guardtest.WriteModel(t.TempDir(), guardtest.Options{Preset: "no-such"}); err == nil {
		t.Error("an unknown preset accepted")
	}
}
