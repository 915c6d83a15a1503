package cuda

import (
	"fmt"
	"runtime"
)

// Device attributes (CUdevice_attribute) this package reads.
const (
	attrSMCount           = 16
	attrMemoryClockKHz    = 36
	attrMemoryBusWidth    = 37
	attrL2CacheSize       = 38
	attrComputeMajor      = 75
	attrComputeMinor      = 76
	attrMaxSharedPerBlock = 97 // opt-in maximum
)

// DeviceInfo describes one GPU.
type DeviceInfo struct {
	Ordinal      int    `json:"ordinal"`
	Name         string `json:"name"`
	TotalMemory  int64  `json:"total_memory"`
	ComputeMajor int    `json:"compute_major"`
	ComputeMinor int    `json:"compute_minor"`
	SMs          int    `json:"sms"`
	L2Bytes      int    `json:"l2_bytes"`
	// MaxSharedPerBlock is the shared memory a block may opt into.
	MaxSharedPerBlock int `json:"max_shared_per_block"`
	// PeakBandwidth is the memory's theoretical bandwidth in bytes/s
	// (clock × bus width × 2 for DDR), 0 when the driver does not say.
	PeakBandwidth float64 `json:"peak_bandwidth"`
}

// Devices lists the GPUs the driver sees.
func Devices() ([]DeviceInfo, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	var n int32
	if err := check("cuDeviceGetCount", drv.cuDeviceGetCount(&n)); err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, n)
	for i := range int(n) {
		d, err := deviceInfo(i)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func deviceInfo(ordinal int) (DeviceInfo, error) {
	var d int32
	if err := check("cuDeviceGet", drv.cuDeviceGet(&d, int32(ordinal))); err != nil {
		return DeviceInfo{}, err
	}
	name := make([]byte, 256)
	if err := check("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), d)); err != nil {
		return DeviceInfo{}, err
	}
	runtime.KeepAlive(name)
	var mem uintptr
	if err := check("cuDeviceTotalMem", drv.cuDeviceTotalMem(&mem, d)); err != nil {
		return DeviceInfo{}, err
	}
	attr := func(a int32) int {
		var v int32
		if drv.cuDeviceGetAttribute(&v, a, d) != 0 {
			return 0
		}
		return int(v)
	}
	info := DeviceInfo{
		Ordinal: ordinal, Name: goString(&name[0]), TotalMemory: int64(mem),
		ComputeMajor: attr(attrComputeMajor), ComputeMinor: attr(attrComputeMinor),
		SMs: attr(attrSMCount), L2Bytes: attr(attrL2CacheSize), MaxSharedPerBlock: attr(attrMaxSharedPerBlock),
	}
	if clk, bus := attr(attrMemoryClockKHz), attr(attrMemoryBusWidth); clk > 0 && bus > 0 {
		info.PeakBandwidth = float64(clk) * 1e3 * float64(bus) / 8 * 2
	}
	return info, nil
}

// String is a one-line description: "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.6 GiB)".
func (d DeviceInfo) String() string {
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %.1f GiB)", d.Name, d.ComputeMajor, d.ComputeMinor, d.SMs, float64(d.TotalMemory)/(1<<30))
}
