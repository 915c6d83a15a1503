// Package gpu is streamguard's CUDA backend: the Qwen3Guard forward on an
// NVIDIA GPU through the driver API (package cuda), with kernels written in
// CUDA C (kernels.cu) and embedded as PTX.
package gpu

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:generate ./gen.sh

var (
	//go:embed kernels_sm80.ptx
	ptxSM80 string
	//go:embed kernels_sm90.ptx
	ptxSM90 string
)

// PTX returns the kernels' PTX for a GPU of compute capability major.minor:
// the compute_90 build for Hopper and later, else the compute_80 one (which
// the driver also compiles for later GPUs).
func PTX(major, minor int) (string, error) {
	switch {
	case major >= 9:
		return ptxSM90, nil
	case major == 8:
		return ptxSM80, nil
	}
	return "", fmt.Errorf("gpu: compute capability %d.%d is below 8.0 (Ampere), which the kernels need for bf16", major, minor)
}

// MinDriverVersion is the oldest driver (CUDA version, major*1000 +
// minor*10) whose JIT takes the kernels' PTX: ISA 7.8 is CUDA 11.8's
// (drivers R520 and later). An older driver would refuse them only when
// they are loaded, with an error about the PTX version.
const MinDriverVersion = 11080

// ptxDriverVersion is the CUDA version that introduced a PTX ISA version
// (ISA 7.x came with CUDA 11.x, 8.x with 12.x), from the ".version" line.
func ptxDriverVersion(ptx string) (int, error) {
	for line := range strings.Lines(ptx) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), ".version "); ok {
			var major, minor int
			if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
				return 0, fmt.Errorf("gpu: PTX .version %q: %w", v, err)
			}
			return (major+4)*1000 + minor*10, nil
		}
	}
	return 0, fmt.Errorf("gpu: PTX without a .version line")
}

// ptxHeader reads the header gen.sh writes: the source's SHA-256 and the
// compiler line.
func ptxHeader(ptx string) (sum, compiler string) {
	for _, line := range strings.SplitN(ptx, "\n", 4)[:3] {
		if v, ok := strings.CutPrefix(line, "// source-sha256: "); ok {
			sum = v
		}
		if v, ok := strings.CutPrefix(line, "// nvcc: "); ok {
			compiler = v
		}
	}
	return sum, compiler
}
