package cuda

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Module is loaded PTX: the driver compiles it for the context's GPU.
type Module struct {
	c     *Context
	h     uintptr
	funcs map[string]*Function
}

// JIT options of cuModuleLoadDataEx (CUjit_option).
const (
	jitErrorLogBuffer     = 5
	jitErrorLogBufferSize = 6
)

// LoadPTX loads PTX text; a compile error carries the driver's log.
func (c *Context) LoadPTX(ptx string) (*Module, error) {
	m := &Module{c: c, funcs: map[string]*Function{}}
	img := cString(ptx)
	log := make([]byte, 16<<10)
	// The option values are pointer-sized: the log's address, then its
	// size as an integer. The log is pinned so that its address stays
	// valid while held as an integer.
	var pin runtime.Pinner
	pin.Pin(&log[0])
	defer pin.Unpin()
	opts := []int32{jitErrorLogBuffer, jitErrorLogBufferSize}
	vals := []uintptr{uintptr(unsafe.Pointer(&log[0])), uintptr(len(log))}
	err := c.Do(func() error {
		return check("cuModuleLoadDataEx", drv.cuModuleLoadDataEx(&m.h, unsafe.Pointer(img), uint32(len(opts)), &opts[0], &vals[0]))
	})
	runtime.KeepAlive(img)
	if err != nil {
		if s := strings.TrimSpace(goString(&log[0])); s != "" {
			return nil, fmt.Errorf("%w\n%s", err, s)
		}
		return nil, err
	}
	return m, nil
}

// Unload releases the module.
func (m *Module) Unload() error {
	if m.h == 0 {
		return nil
	}
	err := m.c.Do(func() error { return check("cuModuleUnload", drv.cuModuleUnload(m.h)) })
	m.h = 0
	return err
}

// Function is a kernel of a module.
type Function struct {
	m    *Module
	h    uintptr
	Name string
}

// Function looks a kernel up by its (extern "C") name.
func (m *Module) Function(name string) (*Function, error) {
	if f, ok := m.funcs[name]; ok {
		return f, nil
	}
	f := &Function{m: m, Name: name}
	cname := cString(name)
	err := m.c.Do(func() error { return check("cuModuleGetFunction "+name, drv.cuModuleGetFunction(&f.h, m.h, cname)) })
	runtime.KeepAlive(cname)
	if err != nil {
		return nil, err
	}
	m.funcs[name] = f
	return f, nil
}

// Dim3 is a grid or block size.
type Dim3 struct{ X, Y, Z uint32 }

// Launch queues the kernel on the default stream, with no dynamic shared
// memory. Each arg is passed by value as the kernel's parameter of the same
// position: uint64 for device pointers, int32/uint32/float32 for scalars,
// matching the kernel's C types exactly.
func (f *Function) Launch(grid, block Dim3, args ...any) error {
	return f.launch(0, grid, block, args)
}

// LaunchOn is Launch on stream s (recorded into a graph while s captures
// one).
func (f *Function) LaunchOn(s *Stream, grid, block Dim3, args ...any) error {
	return f.launch(s.h, grid, block, args)
}

func (f *Function) launch(stream uintptr, grid, block Dim3, args []any) error {
	params := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case uint64:
			params[i] = unsafe.Pointer(&v)
		case int32:
			params[i] = unsafe.Pointer(&v)
		case uint32:
			params[i] = unsafe.Pointer(&v)
		case float32:
			params[i] = unsafe.Pointer(&v)
		default:
			return fmt.Errorf("cuda: %s: argument %d has unsupported type %T", f.Name, i, a)
		}
	}
	var pp *unsafe.Pointer
	if len(params) > 0 {
		pp = &params[0]
	}
	grid, block = grid.norm(), block.norm()
	// The driver copies the parameter values when it queues the launch.
	err := f.m.c.Do(func() error {
		return check("cuLaunchKernel "+f.Name, drv.cuLaunchKernel(f.h, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, 0, stream, pp, nil))
	})
	runtime.KeepAlive(params)
	runtime.KeepAlive(args)
	return err
}

func (d Dim3) norm() Dim3 {
	return Dim3{max(d.X, 1), max(d.Y, 1), max(d.Z, 1)}
}
