package cuda

import "time"

// Stream is a queue of GPU work.
type Stream struct {
	c *Context
	h uintptr
}

// NewStream creates a stream that does not synchronise with the default
// stream (CU_STREAM_NON_BLOCKING).
func (c *Context) NewStream() (*Stream, error) {
	s := &Stream{c: c}
	if err := c.Do(func() error { return check("cuStreamCreate", drv.cuStreamCreate(&s.h, 1)) }); err != nil {
		return nil, err
	}
	return s, nil
}

// Synchronize waits for the stream's work.
func (s *Stream) Synchronize() error {
	return s.c.Do(func() error { return check("cuStreamSynchronize", drv.cuStreamSynchronize(s.h)) })
}

// Destroy releases the stream.
func (s *Stream) Destroy() error {
	if s.h == 0 {
		return nil
	}
	err := s.c.Do(func() error { return check("cuStreamDestroy", drv.cuStreamDestroy(s.h)) })
	s.h = 0
	return err
}

// Time runs f, which queues work on s, and returns the GPU time between
// events recorded before and after it.
func (s *Stream) Time(f func() error) (time.Duration, error) {
	var start, end uintptr
	var ms float32
	err := s.c.Do(func() error {
		if err := check("cuEventCreate", drv.cuEventCreate(&start, 0)); err != nil {
			return err
		}
		if err := check("cuEventCreate", drv.cuEventCreate(&end, 0)); err != nil {
			return err
		}
		return check("cuEventRecord", drv.cuEventRecord(start, s.h))
	})
	defer s.c.Do(func() error {
		if start != 0 {
			drv.cuEventDestroy(start)
		}
		if end != 0 {
			drv.cuEventDestroy(end)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	err = s.c.Do(func() error {
		if err := check("cuEventRecord", drv.cuEventRecord(end, s.h)); err != nil {
			return err
		}
		if err := check("cuEventSynchronize", drv.cuEventSynchronize(end)); err != nil {
			return err
		}
		return check("cuEventElapsedTime", drv.cuEventElapsedTime(&ms, start, end))
	})
	return time.Duration(float64(ms) * float64(time.Millisecond)), err
}

// Graph is a captured sequence of launches, replayed with one call: a
// decode step's hundreds of small kernels cost one launch.
type Graph struct {
	s          *Stream
	graph, exe uintptr
}

// Capture records the work f queues on s (without running it) into a
// graph.
func (s *Stream) Capture(f func() error) (*Graph, error) {
	g := &Graph{s: s}
	// CU_STREAM_CAPTURE_MODE_THREAD_LOCAL (1): other threads' unrelated
	// driver calls stay legal while this one captures.
	if err := s.c.Do(func() error { return check("cuStreamBeginCapture", drv.cuStreamBeginCapture(s.h, 1)) }); err != nil {
		return nil, err
	}
	ferr := f()
	err := s.c.Do(func() error { return check("cuStreamEndCapture", drv.cuStreamEndCapture(s.h, &g.graph)) })
	if ferr != nil {
		g.Destroy()
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	if err := s.c.Do(func() error { return check("cuGraphInstantiate", drv.cuGraphInstantiate(&g.exe, g.graph, 0)) }); err != nil {
		g.Destroy()
		return nil, err
	}
	return g, nil
}

// Launch replays the graph on its stream.
func (g *Graph) Launch() error {
	return g.s.c.Do(func() error { return check("cuGraphLaunch", drv.cuGraphLaunch(g.exe, g.s.h)) })
}

// Destroy releases the graph.
func (g *Graph) Destroy() {
	g.s.c.Do(func() error {
		if g.exe != 0 {
			drv.cuGraphExecDestroy(g.exe)
		}
		if g.graph != 0 {
			drv.cuGraphDestroy(g.graph)
		}
		return nil
	})
	g.exe, g.graph = 0, 0
}
