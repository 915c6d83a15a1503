package cuda

import (
	"errors"
	"fmt"
)

// Graph is a recorded sequence of kernel launches that the GPU replays with
// one call: a step of many small kernels then costs one launch on the host
// instead of one per kernel, and the GPU starts each kernel without waiting
// for the host. The launches' arguments are fixed when recorded.
type Graph struct {
	c     *Context
	exec  uintptr
	Nodes int // kernels recorded
}

// GraphsSupported reports whether the driver can record and replay graphs
// (CUDA 11.4 or later); it is false where no driver loads.
func GraphsSupported() bool { return Load() == nil && drv.graphs }

// captureThreadLocal is CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: the capture
// refuses calls of this thread that would synchronise with it (a copy on
// the default stream, an allocation) instead of recording a broken graph.
const captureThreadLocal = 1

// Capture records the work record queues on s, without running it, into a
// graph ready to launch. record runs with the context current and its OS
// thread locked, and must queue its work on s only.
func (s *Stream) Capture(record func() error) (*Graph, error) {
	if !GraphsSupported() {
		return nil, errors.New("cuda: the driver has no graph support (CUDA 11.4 or later)")
	}
	g := &Graph{c: s.c}
	err := s.c.Do(func() error {
		if err := check("cuStreamBeginCapture", drv.cuStreamBeginCapture(s.h, captureThreadLocal)); err != nil {
			return err
		}
		rerr := record()
		// End the capture whatever happened, so that s is usable again.
		var tmpl uintptr
		eerr := check("cuStreamEndCapture", drv.cuStreamEndCapture(s.h, &tmpl))
		if tmpl != 0 {
			defer drv.cuGraphDestroy(tmpl)
		}
		if rerr != nil {
			return rerr
		}
		if eerr != nil {
			return eerr
		}
		var n uintptr
		if err := check("cuGraphGetNodes", drv.cuGraphGetNodes(tmpl, nil, &n)); err != nil {
			return err
		}
		g.Nodes = int(n)
		return check("cuGraphInstantiateWithFlags", drv.cuGraphInstantiateWithFlags(&g.exec, tmpl, 0))
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: capturing a graph: %w", err)
	}
	return g, nil
}

// Launch queues the graph's work on s.
func (g *Graph) Launch(s *Stream) error {
	return s.c.Do(func() error { return check("cuGraphLaunch", drv.cuGraphLaunch(g.exec, s.h)) })
}

// Close frees the graph; it is safe to call more than once.
func (g *Graph) Close() error {
	if g == nil || g.exec == 0 {
		return nil
	}
	err := g.c.Do(func() error { return check("cuGraphExecDestroy", drv.cuGraphExecDestroy(g.exec)) })
	g.exec = 0
	return err
}
