package cuda

import (
	"fmt"
	"runtime"
	"sync"
)

// Context is a device's primary context: the one every user of the device
// in this process shares, as the CUDA runtime does.
type Context struct {
	Device DeviceInfo
	dev    int32
	h      uintptr

	mu     sync.Mutex
	closed bool
}

// Open retains the primary context of GPU ordinal.
func Open(ordinal int) (*Context, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	var n int32
	if err := check("cuDeviceGetCount", drv.cuDeviceGetCount(&n)); err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= int(n) {
		return nil, fmt.Errorf("cuda: no GPU %d (the driver sees %d)", ordinal, n)
	}
	info, err := deviceInfo(ordinal)
	if err != nil {
		return nil, err
	}
	var d int32
	if err := check("cuDeviceGet", drv.cuDeviceGet(&d, int32(ordinal))); err != nil {
		return nil, err
	}
	c := &Context{Device: info, dev: d}
	if err := check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryRetain(&c.h, d)); err != nil {
		return nil, err
	}
	return c, nil
}

// Do runs f with the context current on f's OS thread: driver calls made
// inside f (through this package) need no other setup.
func (c *Context) Do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := check("cuCtxSetCurrent", drv.cuCtxSetCurrent(c.h)); err != nil {
		return err
	}
	return f()
}

// Synchronize waits for all work on the context.
func (c *Context) Synchronize() error {
	return c.Do(func() error { return check("cuCtxSynchronize", drv.cuCtxSynchronize()) })
}

// MemInfo returns the free and total device memory.
func (c *Context) MemInfo() (free, total int64, err error) {
	err = c.Do(func() error {
		var f, t uintptr
		if err := check("cuMemGetInfo", drv.cuMemGetInfo(&f, &t)); err != nil {
			return err
		}
		free, total = int64(f), int64(t)
		return nil
	})
	return free, total, err
}

// Close releases the primary context; buffers, modules and streams made
// in it must be freed first.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return check("cuDevicePrimaryCtxRelease", drv.cuDevicePrimaryRelease(c.dev))
}
