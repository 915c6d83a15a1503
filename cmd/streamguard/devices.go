package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
)

func init() {
	register(&command{
		name:    "devices",
		summary: "list the CPU and the NVIDIA GPUs this binary can use",
		run:     runDevices,
	})
}

// gpuInfo is one GPU as devices reports it.
type gpuInfo struct {
	Ordinal       int     `json:"ordinal"`
	Name          string  `json:"name"`
	TotalMemory   int64   `json:"total_memory"`
	Compute       string  `json:"compute_capability"`
	SMs           int     `json:"sms"`
	PeakBandwidth float64 `json:"peak_bandwidth"`
}

// gpuReport is what the GPU backend says about this machine: the driver's
// CUDA version and the GPUs, or why there are none. Set by cuda_on.go in a
// build with the cuda tag.
var gpuReport = func() (driver int, gpus []gpuInfo, err error) {
	return 0, nil, errNoCUDA
}

// errNoCUDA is why a build without the cuda tag has no GPU.
var errNoCUDA = fmt.Errorf("this streamguard was built without the CUDA backend; build one with `CGO_ENABLED=0 go build -tags cuda ./cmd/streamguard` (still no cgo, but linked dynamically to the C library, which loading libcuda.so.1 needs)")

func runDevices(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("devices", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	driver, gpus, gerr := gpuReport()
	if *asJSON {
		out := map[string]any{
			"cpu":  map[string]any{"arch": runtime.GOARCH, "cores": runtime.NumCPU()},
			"gpus": gpus,
		}
		if gpus == nil {
			out["gpus"] = []gpuInfo{}
		}
		if driver > 0 {
			out["cuda_driver_version"] = fmt.Sprintf("%d.%d", driver/1000, driver%1000/10)
		}
		if gerr != nil {
			out["gpu_error"] = gerr.Error()
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(stdout, "cpu: %s, %d cores\n", runtime.GOARCH, runtime.NumCPU())
	if gerr != nil {
		fmt.Fprintf(stdout, "gpu: none (%v)\n", gerr)
		return nil
	}
	if driver > 0 {
		fmt.Fprintf(stdout, "cuda driver: %d.%d\n", driver/1000, driver%1000/10)
	}
	for _, g := range gpus {
		fmt.Fprintf(stdout, "gpu %d: %s (compute %s, %d SMs, %.1f GiB, %.0f GB/s peak)\n",
			g.Ordinal, g.Name, g.Compute, g.SMs, float64(g.TotalMemory)/(1<<30), g.PeakBandwidth/1e9)
	}
	return nil
}
