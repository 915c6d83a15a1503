package cuda

import (
	"fmt"
	"unsafe"
)

// Stream is an ordered queue of GPU work. It does not wait for work on the
// legacy default stream (the synchronous copies and Launch), nor that work
// for it: synchronise the context between the two where they share memory.
// A stream, unlike the default stream, can be captured into a Graph.
type Stream struct {
	c *Context
	h uintptr
}

// streamNonBlocking is CU_STREAM_NON_BLOCKING.
const streamNonBlocking = 1

// NewStream creates a stream on the context.
func (c *Context) NewStream() (*Stream, error) {
	s := &Stream{c: c}
	if err := c.Do(func() error { return check("cuStreamCreate", drv.cuStreamCreate(&s.h, streamNonBlocking)) }); err != nil {
		return nil, err
	}
	return s, nil
}

// Close destroys the stream once its work is done; it is safe to call more
// than once.
func (s *Stream) Close() error {
	if s == nil || s.h == 0 {
		return nil
	}
	err := s.c.Do(func() error { return check("cuStreamDestroy", drv.cuStreamDestroy(s.h)) })
	s.h = 0
	return err
}

// Synchronize waits for the work queued on s.
func (s *Stream) Synchronize() error {
	return s.c.Do(func() error { return check("cuStreamSynchronize", drv.cuStreamSynchronize(s.h)) })
}

// Do runs f with the stream's context current on f's OS thread, so that a
// sequence of queuing calls pays for the thread binding once.
func (s *Stream) Do(f func() error) error { return s.c.Do(f) }

// CopyInOn queues a copy of src (a slice of fixed-size elements) to b at byte
// offset off on stream s. src may be reused when it returns: the driver
// stages pageable host memory before returning.
func CopyInOn[T any](s *Stream, b *Buffer, off int64, src []T) error {
	n := int64(len(src)) * int64(unsafe.Sizeof(*new(T)))
	if n == 0 {
		return nil
	}
	if off < 0 || off+n > b.Len {
		return fmt.Errorf("cuda: copy of %d bytes at %d into a buffer of %d", n, off, b.Len)
	}
	return s.c.Do(func() error {
		return check("cuMemcpyHtoDAsync", drv.cuMemcpyHtoDAsync(b.Ptr+uint64(off), unsafe.Pointer(&src[0]), uintptr(n), s.h))
	})
}

// CopyOutOn copies len(dst) elements from b at byte offset off into dst
// after the work queued on s before it, and returns when dst holds them.
func CopyOutOn[T any](s *Stream, dst []T, b *Buffer, off int64) error {
	n := int64(len(dst)) * int64(unsafe.Sizeof(*new(T)))
	if n == 0 {
		return nil
	}
	if off < 0 || off+n > b.Len {
		return fmt.Errorf("cuda: copy of %d bytes at %d from a buffer of %d", n, off, b.Len)
	}
	return s.c.Do(func() error {
		if err := check("cuMemcpyDtoHAsync", drv.cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), b.Ptr+uint64(off), uintptr(n), s.h)); err != nil {
			return err
		}
		return check("cuStreamSynchronize", drv.cuStreamSynchronize(s.h))
	})
}
