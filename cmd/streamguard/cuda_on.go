//go:build cuda

package main

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/cuda"
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
