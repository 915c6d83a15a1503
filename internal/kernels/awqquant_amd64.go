//go:build !purego

package kernels

import "golang.org/x/sys/cpu"

func init() {
	x := &cpu.X86
	if x.HasAVX512F {
		quantCodesOrAsm, clipDeltaAsm, roundEvenAsm = quantCodesOrAVX512, clipDeltaAVX512, roundEvenAVX512
		// The horizontal max and min use EVEX-encoded 256-bit forms.
		if x.HasAVX512VL {
			scaleRangeAsm, minMaxAsm = scaleRangeAVX512, minMaxAVX512
		}
	}
}
