package guard

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/streamguard/streamguard/internal/qwen3"
)

// engine runs the network for a Model: the CPU engine (qwen3.Model) or a
// GPU (engine_cuda.go, in builds with the cuda tag). Streams, queues,
// policies and verdicts are the same whichever runs it.
type engine interface {
	newCache() kvCache
	// forward runs each cache's new ids in one batch and appends them to
	// the caches; with hidden, the outputs carry the final normed hidden
	// states too (tools: forward, train-heads).
	forward(caches []kvCache, ids [][]int, hidden bool) ([]qwen3.Output, error)
	bytesPerPosition() int64
	// capacityBytes is the KV-cache memory the engine can hold for all
	// streams together, or 0 when it grows on demand (the CPU).
	capacityBytes() int64
	// device names where the network runs: "cpu", "cuda:0 (NVIDIA H100 ...)".
	device() string
	// kvType names how the streams' caches store keys and values.
	kvType() string
	close() error
}

// kvCache is one stream's KV cache in an engine.
type kvCache interface {
	Len() int
	Bytes() int64
	Release()
}

// cpuEngine is the CPU engine.
type cpuEngine struct{ net *qwen3.Model }

func (e cpuEngine) newCache() kvCache { return e.net.NewCache() }

func (e cpuEngine) forward(caches []kvCache, ids [][]int, hidden bool) ([]qwen3.Output, error) {
	seqs := make([]qwen3.Sequence, len(caches))
	for i, c := range caches {
		seqs[i] = qwen3.Sequence{Cache: c.(*qwen3.Cache), IDs: ids[i]}
	}
	return e.net.Forward(seqs, qwen3.ForwardOptions{Hidden: hidden})
}

func (e cpuEngine) bytesPerPosition() int64 { return e.net.BytesPerPosition() }
func (e cpuEngine) capacityBytes() int64    { return 0 }
func (e cpuEngine) device() string          { return "cpu" }
func (e cpuEngine) kvType() string          { return e.net.KVCache().String() }
func (e cpuEngine) close() error            { return nil }

// newGPUEngine uploads net to GPU ordinal; set by engine_cuda.go. Without
// the cuda build tag it is nil.
var newGPUEngine func(net *qwen3.Model, ordinal int) (engine, error)

// errNoCUDABuild is why a build without the cuda tag runs on the CPU.
const errNoCUDABuild = "this binary was built without the CUDA backend (build with -tags cuda)"

// parseDevice reads Options.Device: "" or "cpu", "auto", "cuda", "cuda:N".
func parseDevice(s string) (kind string, ordinal int, err error) {
	switch s {
	case "", "cpu":
		return "cpu", 0, nil
	case "auto":
		return "auto", 0, nil
	case "cuda", "gpu":
		return "cuda", 0, nil
	}
	if n, ok := strings.CutPrefix(s, "cuda:"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 {
			return "cuda", i, nil
		}
	}
	return "", 0, fmt.Errorf("guard: device %q: want cpu, auto, cuda or cuda:N", s)
}

// chooseEngine puts net on the device opts ask for. With auto, a GPU that
// cannot take the model (no cuda build, no driver, no GPU, a format the GPU
// backend does not run) leaves it on the CPU, and why is returned as note.
func chooseEngine(net *qwen3.Model, device string) (e engine, note string, err error) {
	kind, ordinal, err := parseDevice(device)
	if err != nil {
		return nil, "", err
	}
	if kind == "cpu" {
		return cpuEngine{net}, "", nil
	}
	if newGPUEngine == nil {
		if kind == "cuda" {
			return nil, "", fmt.Errorf("guard: device %s: %s", device, errNoCUDABuild)
		}
		return cpuEngine{net}, errNoCUDABuild, nil
	}
	g, gerr := newGPUEngine(net, ordinal)
	if gerr == nil {
		return g, "", nil
	}
	if kind == "cuda" {
		return nil, "", fmt.Errorf("guard: device %s: %w", device, gerr)
	}
	return cpuEngine{net}, gerr.Error(), nil
}

// forwardFresh runs each id sequence from an empty cache, all in one batch
// on the model's engine (CPU or GPU), and returns their outputs with the
// final normed hidden states; the caches are released. It serves the
// module's tools through guardhook.Forward.
func (m *Model) forwardFresh(ids [][]int) ([]qwen3.Output, error) {
	m.run.RLock() // as Step does: Close waits for the forward
	defer m.run.RUnlock()
	if err := m.usable(); err != nil {
		return nil, err
	}
	caches := make([]kvCache, len(ids))
	for i := range caches {
		caches[i] = m.eng.newCache()
	}
	defer func() {
		for _, c := range caches {
			c.Release()
		}
	}()
	return m.eng.forward(caches, ids, true)
}
