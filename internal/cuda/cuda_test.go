package cuda

import (
	"errors"
	"strings"
	"testing"
)

// TestLoad checks each outcome: where the driver library is missing (most
// CI machines) or present without a GPU (cuInit fails: a machine with the
// CUDA toolkit's driver packages), the error says which; where a GPU is
// present, the driver initialises and lists it.
func TestLoad(t *testing.T) {
	err := Load()
	if err != nil {
		if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "libcuda.so.1") && !strings.Contains(err.Error(), "cuInit") {
			t.Fatalf("Load without a driver: %v (want ErrNoDriver naming libcuda.so.1 or cuInit)", err)
		}
		if _, err := Devices(); !errors.Is(err, ErrNoDriver) {
			t.Errorf("Devices without a driver: %v", err)
		}
		if _, err := Open(0); !errors.Is(err, ErrNoDriver) {
			t.Errorf("Open without a driver: %v", err)
		}
		t.Logf("no driver here: %v", err)
		return
	}
	ds, err := Devices()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 {
		t.Fatal("the driver loaded but lists no GPU")
	}
	v, err := DriverVersion()
	if err != nil || v < 11000 {
		t.Errorf("driver version %d, %v", v, err)
	}
	for _, d := range ds {
		t.Logf("GPU %d: %s; peak bandwidth %.0f GB/s; driver CUDA %d", d.Ordinal, d, d.PeakBandwidth/1e9, v)
		if d.TotalMemory <= 0 || d.SMs <= 0 || d.ComputeMajor < 5 {
			t.Errorf("implausible device info %+v", d)
		}
	}
}

// TestMemoryRoundTrip copies data to the GPU and back.
func TestMemoryRoundTrip(t *testing.T) {
	c, err := Open(0)
	if err != nil {
		t.Skipf("no GPU to run on: %v", err)
	}
	b, err := c.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	in := make([]float32, 1024)
	for i := range in {
		in[i] = float32(i) * 0.5
	}
	if err := CopyIn(b, 0, in); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, 512)
	if err := CopyOut(out, b, 2048); err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != in[512+i] {
			t.Fatalf("element %d: got %v, want %v", 512+i, v, in[512+i])
		}
	}
	if err := CopyOut(make([]float32, 2), b, 4092); err == nil {
		t.Error("a copy past the end of the buffer was accepted")
	}
	if _, err := c.Alloc(1 << 50); !IsOutOfMemory(err) {
		t.Errorf("a 1 PiB allocation: %v, want out of memory", err)
	}
}

// TestBadPTX checks that a module that does not compile reports the
// driver's log.
func TestBadPTX(t *testing.T) {
	c, err := Open(0)
	if err != nil {
		t.Skipf("no GPU to run on: %v", err)
	}
	_, err = c.LoadPTX(".version 7.8\n.target sm_80\n.address_size 64\nthis is not ptx\n")
	if err == nil {
		t.Fatal("bad PTX loaded")
	}
	t.Logf("bad PTX: %v", err)
}
