//go:build cuda

package guard

import (
	"fmt"
	"sync"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/gpu"
	"github.com/streamguard/streamguard/internal/qwen3"
)

func init() { newGPUEngine = openGPU }

// gpuEngine runs the network on one GPU. Its forward is serialised: the
// GPU model has one workspace, and a server's scheduler batches streams
// into one forward anyway.
type gpuEngine struct {
	ctx *cuda.Context
	m   *gpu.Model
	mu  sync.Mutex
}

func openGPU(net *qwen3.Model, ordinal int) (engine, error) {
	ctx, err := cuda.Open(ordinal)
	if err != nil {
		return nil, err
	}
	m, err := gpu.Upload(ctx, net, gpu.Options{})
	if err != nil {
		ctx.Close()
		return nil, err
	}
	return &gpuEngine{ctx: ctx, m: m}, nil
}

func (e *gpuEngine) newCache() kvCache { return e.m.NewCache() }

func (e *gpuEngine) forward(caches []kvCache, ids [][]int, hidden bool) ([]qwen3.Output, error) {
	seqs := make([]gpu.Sequence, len(caches))
	for i, c := range caches {
		seqs[i] = gpu.Sequence{Cache: c.(*gpu.Cache), IDs: ids[i]}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if hidden {
		return e.m.ForwardHidden(seqs)
	}
	return e.m.Forward(seqs)
}

func (e *gpuEngine) bytesPerPosition() int64 { return e.m.BytesPerPosition() }

func (e *gpuEngine) capacityBytes() int64 {
	_, total, bs := e.m.CacheBlocks()
	return int64(total) * int64(bs) * e.m.BytesPerPosition()
}

// kvType: the GPU engine keeps its own paged bfloat16 cache whatever
// Options.KVCache says.
func (e *gpuEngine) kvType() string { return "bf16" }

func (e *gpuEngine) device() string {
	return fmt.Sprintf("cuda:%d (%s)", e.ctx.Device.Ordinal, e.ctx.Device)
}

func (e *gpuEngine) close() error {
	err := e.m.Close()
	if cerr := e.ctx.Close(); err == nil {
		err = cerr
	}
	return err
}
