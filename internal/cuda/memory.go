package cuda

import (
	"fmt"
	"unsafe"
)

// Buffer is device memory.
type Buffer struct {
	c   *Context
	Ptr uint64
	Len int64 // bytes
}

// Alloc allocates n bytes of device memory (not cleared).
func (c *Context) Alloc(n int64) (*Buffer, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cuda: allocation of %d bytes", n)
	}
	b := &Buffer{c: c, Len: n}
	err := c.Do(func() error { return check("cuMemAlloc", drv.cuMemAlloc(&b.Ptr, uintptr(n))) })
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Free releases the memory; it is safe to call more than once.
func (b *Buffer) Free() error {
	if b == nil || b.Ptr == 0 {
		return nil
	}
	err := b.c.Do(func() error { return check("cuMemFree", drv.cuMemFree(b.Ptr)) })
	b.Ptr = 0
	return err
}

// Offset is the device address off bytes into b.
func (b *Buffer) Offset(off int64) uint64 { return b.Ptr + uint64(off) }

// CopyIn copies the bytes of src (a slice of fixed-size elements) to b at
// byte offset off; it returns when the copy is done.
func CopyIn[T any](b *Buffer, off int64, src []T) error {
	n := int64(len(src)) * int64(unsafe.Sizeof(*new(T)))
	if n == 0 {
		return nil
	}
	if off < 0 || off+n > b.Len {
		return fmt.Errorf("cuda: copy of %d bytes at %d into a buffer of %d", n, off, b.Len)
	}
	return b.c.Do(func() error {
		return check("cuMemcpyHtoD", drv.cuMemcpyHtoD(b.Ptr+uint64(off), unsafe.Pointer(&src[0]), uintptr(n)))
	})
}

// CopyOut copies len(dst) elements from b at byte offset off into dst,
// after the work queued before it is done.
func CopyOut[T any](dst []T, b *Buffer, off int64) error {
	n := int64(len(dst)) * int64(unsafe.Sizeof(*new(T)))
	if n == 0 {
		return nil
	}
	if off < 0 || off+n > b.Len {
		return fmt.Errorf("cuda: copy of %d bytes at %d from a buffer of %d", n, off, b.Len)
	}
	return b.c.Do(func() error {
		return check("cuMemcpyDtoH", drv.cuMemcpyDtoH(unsafe.Pointer(&dst[0]), b.Ptr+uint64(off), uintptr(n)))
	})
}

// CopyDevice copies n bytes between device addresses.
func (c *Context) CopyDevice(dst, src uint64, n int64) error {
	return c.Do(func() error { return check("cuMemcpyDtoD", drv.cuMemcpyDtoD(dst, src, uintptr(n))) })
}
