package cuda

import (
	"errors"
	"os"
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
	c := openGPU(t)
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
	c := openGPU(t)
	_, err := c.LoadPTX(".version 7.8\n.target sm_80\n.address_size 64\nthis is not ptx\n")
	if err == nil {
		t.Fatal("bad PTX loaded")
	}
	t.Logf("bad PTX: %v", err)
}

// incPTX is a kernel that adds 1 to each of n floats: inc(float *p, uint32 n).
const incPTX = `.version 7.0
.target sm_80
.address_size 64
.visible .entry inc(.param .u64 p, .param .u32 n)
{
	.reg .pred %p;
	.reg .b32 %r<6>;
	.reg .f32 %f<3>;
	.reg .b64 %rd<5>;
	ld.param.u64 %rd1, [p];
	ld.param.u32 %r1, [n];
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mov.u32 %r4, %tid.x;
	mad.lo.s32 %r5, %r2, %r3, %r4;
	setp.ge.u32 %p, %r5, %r1;
	@%p bra DONE;
	cvta.to.global.u64 %rd2, %rd1;
	mul.wide.u32 %rd3, %r5, 4;
	add.s64 %rd4, %rd2, %rd3;
	ld.global.f32 %f1, [%rd4];
	add.f32 %f2, %f1, 0f3F800000;
	st.global.f32 [%rd4], %f2;
DONE:
	ret;
}
`

// TestStreamAndGraph queues a copy, a kernel and a copy back on a stream,
// then records two launches of the kernel into a graph and replays it three
// times: each replay runs the recorded kernels again (the values climb by
// 2 per replay), and recording itself runs nothing.
func TestStreamAndGraph(t *testing.T) {
	c := openGPU(t)
	m, err := c.LoadPTX(incPTX)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unload()
	inc, err := m.Function("inc")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 1000
	b, err := c.Alloc(n * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(i)
	}
	grid, block := Dim3{X: (n + 255) / 256}, Dim3{X: 256}
	out := make([]float32, n)
	check := func(what string, add float32) {
		t.Helper()
		if err := CopyOutOn(s, out, b, 0); err != nil {
			t.Fatal(err)
		}
		for i, v := range out {
			if v != in[i]+add {
				t.Fatalf("%s: element %d is %v, want %v", what, i, v, in[i]+add)
			}
		}
	}
	if err := CopyInOn(s, b, 0, in); err != nil {
		t.Fatal(err)
	}
	if err := inc.LaunchOn(s, grid, block, b.Ptr, uint32(n)); err != nil {
		t.Fatal(err)
	}
	check("one launch on the stream", 1)
	if !GraphsSupported() {
		t.Skip("the driver has no graph support (CUDA 11.4 or later); streams checked")
	}
	g, err := s.Capture(func() error {
		for range 2 {
			if err := inc.LaunchOn(s, grid, block, b.Ptr, uint32(n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Nodes != 2 {
		t.Errorf("graph of %d nodes, want 2", g.Nodes)
	}
	check("after recording", 1)
	for range 3 {
		if err := g.Launch(s); err != nil {
			t.Fatal(err)
		}
	}
	check("after three replays", 7)
	// A capture whose recording fails leaves the stream usable.
	if _, err := s.Capture(func() error { return errors.New("refused") }); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("a failed recording: %v", err)
	}
	check("after a failed recording", 7)
}

// openGPU opens GPU 0, or skips the test where there is none; with
// STREAMGUARD_REQUIRE_GPU set (scripts/gpu-check.sh), a missing GPU fails it.
func openGPU(t *testing.T) *Context {
	t.Helper()
	c, err := Open(0)
	if err != nil {
		if os.Getenv("STREAMGUARD_REQUIRE_GPU") != "" {
			t.Fatalf("no GPU: %v", err)
		}
		t.Skipf("no GPU to run on: %v", err)
	}
	return c
}
