package cuda

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// result is a CUresult.
type result int32

// The driver's entry points this package uses, bound once by load (a driver
// lacking one is refused, so only what is called is listed). The
// versioned names (_v2) are the ones the CUDA headers map the plain names
// to; drivers keep exporting them.
var drv struct {
	cuInit                 func(flags uint32) result
	cuDriverGetVersion     func(v *int32) result
	cuGetErrorName         func(r result, s **byte) result
	cuGetErrorString       func(r result, s **byte) result
	cuDeviceGetCount       func(n *int32) result
	cuDeviceGet            func(d *int32, ordinal int32) result
	cuDeviceGetName        func(name *byte, n int32, d int32) result
	cuDeviceTotalMem       func(bytes *uintptr, d int32) result
	cuDeviceGetAttribute   func(v *int32, attr int32, d int32) result
	cuDevicePrimaryRetain  func(ctx *uintptr, d int32) result
	cuDevicePrimaryRelease func(d int32) result
	cuCtxSetCurrent        func(ctx uintptr) result
	cuCtxSynchronize       func() result
	cuMemGetInfo           func(free, total *uintptr) result
	cuMemAlloc             func(p *uint64, n uintptr) result
	cuMemFree              func(p uint64) result
	cuMemcpyHtoD           func(dst uint64, src unsafe.Pointer, n uintptr) result
	cuMemcpyDtoH           func(dst unsafe.Pointer, src uint64, n uintptr) result
	cuMemcpyDtoD           func(dst, src uint64, n uintptr) result
	cuModuleLoadDataEx     func(m *uintptr, image unsafe.Pointer, n uint32, opts *int32, vals *uintptr) result
	cuModuleUnload         func(m uintptr) result
	cuModuleGetFunction    func(f *uintptr, m uintptr, name *byte) result
	cuLaunchKernel         func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) result
	cuStreamCreate         func(s *uintptr, flags uint32) result
	cuStreamDestroy        func(s uintptr) result
	cuStreamSynchronize    func(s uintptr) result
	cuMemcpyHtoDAsync      func(dst uint64, src unsafe.Pointer, n uintptr, s uintptr) result
	cuMemcpyDtoHAsync      func(dst unsafe.Pointer, src uint64, n uintptr, s uintptr) result

	// Graphs (CUDA 11.4 and later), bound when the driver has them all:
	// see GraphsSupported.
	cuStreamBeginCapture        func(s uintptr, mode int32) result
	cuStreamEndCapture          func(s uintptr, g *uintptr) result
	cuGraphInstantiateWithFlags func(exec *uintptr, g uintptr, flags uint64) result
	cuGraphGetNodes             func(g uintptr, nodes *uintptr, n *uintptr) result
	cuGraphLaunch               func(exec uintptr, s uintptr) result
	cuGraphExecDestroy          func(exec uintptr) result
	cuGraphDestroy              func(g uintptr) result
	graphs                      bool
}

// libraryNames are tried in order: the driver's soname, then the
// unversioned name some containers provide.
var libraryNames = []string{"libcuda.so.1", "libcuda.so"}

var (
	loadOnce sync.Once
	loadErr  error
)

// ErrNoDriver is wrapped by the error of every call on a machine where the
// NVIDIA driver library cannot be loaded or initialised.
var ErrNoDriver = errors.New("cuda: no usable NVIDIA driver")

// Load opens the driver library and initialises it; it is idempotent and
// safe for concurrent use. Every other function calls it first.
func Load() error {
	loadOnce.Do(func() { loadErr = load() })
	return loadErr
}

func load() error {
	var lib uintptr
	var errs []error
	for _, name := range libraryNames {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib = h
			break
		}
		errs = append(errs, err)
	}
	if lib == 0 {
		return fmt.Errorf("%w: cannot load %s (%v); install the NVIDIA driver, or in a container run with the NVIDIA container runtime (--gpus)",
			ErrNoDriver, libraryNames[0], errors.Join(errs...))
	}
	// graph marks the entry points of graphs, which are optional: without
	// them every kernel is launched directly (GraphsSupported is false).
	syms := []struct {
		fn    any
		name  string
		graph bool
	}{
		{&drv.cuInit, "cuInit", false},
		{&drv.cuDriverGetVersion, "cuDriverGetVersion", false},
		{&drv.cuGetErrorName, "cuGetErrorName", false},
		{&drv.cuGetErrorString, "cuGetErrorString", false},
		{&drv.cuDeviceGetCount, "cuDeviceGetCount", false},
		{&drv.cuDeviceGet, "cuDeviceGet", false},
		{&drv.cuDeviceGetName, "cuDeviceGetName", false},
		{&drv.cuDeviceTotalMem, "cuDeviceTotalMem_v2", false},
		{&drv.cuDeviceGetAttribute, "cuDeviceGetAttribute", false},
		{&drv.cuDevicePrimaryRetain, "cuDevicePrimaryCtxRetain", false},
		{&drv.cuDevicePrimaryRelease, "cuDevicePrimaryCtxRelease_v2", false},
		{&drv.cuCtxSetCurrent, "cuCtxSetCurrent", false},
		{&drv.cuCtxSynchronize, "cuCtxSynchronize", false},
		{&drv.cuMemGetInfo, "cuMemGetInfo_v2", false},
		{&drv.cuMemAlloc, "cuMemAlloc_v2", false},
		{&drv.cuMemFree, "cuMemFree_v2", false},
		{&drv.cuMemcpyHtoD, "cuMemcpyHtoD_v2", false},
		{&drv.cuMemcpyDtoH, "cuMemcpyDtoH_v2", false},
		{&drv.cuMemcpyDtoD, "cuMemcpyDtoD_v2", false},
		{&drv.cuModuleLoadDataEx, "cuModuleLoadDataEx", false},
		{&drv.cuModuleUnload, "cuModuleUnload", false},
		{&drv.cuModuleGetFunction, "cuModuleGetFunction", false},
		{&drv.cuLaunchKernel, "cuLaunchKernel", false},
		{&drv.cuStreamCreate, "cuStreamCreate", false},
		{&drv.cuStreamDestroy, "cuStreamDestroy_v2", false},
		{&drv.cuStreamSynchronize, "cuStreamSynchronize", false},
		{&drv.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", false},
		{&drv.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", false},
		{&drv.cuStreamBeginCapture, "cuStreamBeginCapture_v2", true},
		{&drv.cuStreamEndCapture, "cuStreamEndCapture", true},
		{&drv.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags", true},
		{&drv.cuGraphGetNodes, "cuGraphGetNodes", true},
		{&drv.cuGraphLaunch, "cuGraphLaunch", true},
		{&drv.cuGraphExecDestroy, "cuGraphExecDestroy", true},
		{&drv.cuGraphDestroy, "cuGraphDestroy", true},
	}
	drv.graphs = true
	for _, s := range syms {
		if _, err := purego.Dlsym(lib, s.name); err != nil {
			if s.graph {
				drv.graphs = false
				continue
			}
			return fmt.Errorf("%w: %s lacks %s (driver too old?)", ErrNoDriver, libraryNames[0], s.name)
		}
		purego.RegisterLibFunc(s.fn, lib, s.name)
	}
	if err := check("cuInit", drv.cuInit(0)); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDriver, err)
	}
	return nil
}

// DriverVersion is the CUDA version the driver supports, as major*1000 +
// minor*10 (12080 for 12.8).
func DriverVersion() (int, error) {
	if err := Load(); err != nil {
		return 0, err
	}
	var v int32
	if err := check("cuDriverGetVersion", drv.cuDriverGetVersion(&v)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// Error is a failed driver call.
type Error struct {
	Call string
	Code int    // the CUresult
	Name string // CUDA_ERROR_...
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("cuda: %s: %s (%d): %s", e.Call, e.Name, e.Code, e.Msg)
}

// IsOutOfMemory reports whether err is the driver's CUDA_ERROR_OUT_OF_MEMORY.
func IsOutOfMemory(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == 2
}

func check(call string, r result) error {
	if r == 0 {
		return nil
	}
	e := &Error{Call: call, Code: int(r), Name: "CUDA_ERROR_UNKNOWN", Msg: "unknown error"}
	if drv.cuGetErrorName != nil {
		var p *byte
		if drv.cuGetErrorName(r, &p) == 0 && p != nil {
			e.Name = goString(p)
		}
		if drv.cuGetErrorString(r, &p) == 0 && p != nil {
			e.Msg = goString(p)
		}
	}
	return e
}

// goString copies a NUL-terminated C string owned by the driver.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	var n int
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString is s with a terminating NUL, for the driver.
func cString(s string) *byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}
