//go:build cuda

package main

import (
	"fmt"
	"io"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/gpu"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// With the cuda tag, devices asks the NVIDIA driver.
func init() {
	gpuReport = func() (int, []gpuInfo, error) {
		ds, err := cuda.Devices()
		if err != nil {
			return 0, nil, err
		}
		v, _ := cuda.DriverVersion()
		out := make([]gpuInfo, len(ds))
		for i, d := range ds {
			out[i] = gpuInfo{Ordinal: d.Ordinal, Name: d.Name, TotalMemory: d.TotalMemory,
				Compute: fmt.Sprintf("%d.%d", d.ComputeMajor, d.ComputeMinor), SMs: d.SMs, PeakBandwidth: d.PeakBandwidth}
		}
		return v, out, nil
	}
}

// With the cuda tag, bench --device measures the GPU backend.
func init() {
	gpuBench = func(net *qwen3.Model, ordinal int, o gpuBenchOptions) (any, func(io.Writer) error, error) {
		ctx, err := cuda.Open(ordinal)
		if err != nil {
			return nil, nil, err
		}
		defer ctx.Close()
		r, err := gpu.Bench(ctx, net, gpu.BenchOptions{Prefill: o.Prefill, Positions: o.Positions, Streams: o.Streams, Steps: o.Steps, Seed: o.Seed, Recompute: o.Prefill})
		if err != nil {
			return nil, nil, err
		}
		return r, r.WriteTable, nil
	}
}
