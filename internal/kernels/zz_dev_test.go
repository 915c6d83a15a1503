package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestDevBench(t *testing.T) {
	if os.Getenv("DEVBENCH") == "" {
		t.Skip()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	SetThreads(1)
	defer SetThreads(2)
	for _, sh := range devShapes() {
		r := rand.New(rand.NewPCG(1, 2))
		x := randVec(r, sh.T*sh.K)
		ws := newWeights(r, sh.K*sh.N)
		dst := make([]float32, sh.T*sh.N)
		for _, mc := range matmulCases {
			for _, name := range implNames() {
				if name == "go" && sh.T > 1 {
					continue
				}
				restore, _ := useImpl(name)
				mc.run(dst, x, ws, sh.T, sh.K, sh.N)
				best := time.Hour
				for range 3 {
					c0 := threadCPU()
					reps := 0
					for threadCPU()-c0 < 100*time.Millisecond {
						mc.run(dst, x, ws, sh.T, sh.K, sh.N)
						reps++
					}
					c := (threadCPU() - c0) / time.Duration(reps)
					best = min(best, c)
				}
				restore()
				fl := 2 * float64(sh.T*sh.K*sh.N) / best.Seconds() / 1e9
				fmt.Printf("%-5s %-7s T=%-3d K=%-5d N=%-6d cpu %10v  %7.2f GFLOP/s\n", mc.name, name, sh.T, sh.K, sh.N, best, fl)
			}
		}
	}
}

func devShapes() []benchShape {
	if os.Getenv("DEVSHAPES") == "hot" {
		return []benchShape{{4, 512, 16}, {1, 512, 16}}
	}
	return []benchShape{{1, 1024, 3072}, {64, 1024, 3072}, {1, 4096, 12288}}
}

func TestDevBenchInt4(t *testing.T) {
	if os.Getenv("DEVBENCH") == "" {
		t.Skip()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	SetThreads(1)
	defer SetThreads(2)
	for _, sh := range []benchShape{{1, 1024, 3072}, {64, 1024, 3072}, {1, 4096, 12288}} {
		r := rand.New(rand.NewPCG(1, 2))
		ac := newAWQCase(t, r, sh.K, sh.N, 128, false)
		m, _ := RepackAWQ(ac.qweight, ac.qzeros, ac.scales, sh.K, sh.N, 128)
		x := randVec(r, sh.T*sh.K)
		dst := make([]float32, sh.T*sh.N)
		ws := newWeights(r, sh.K*sh.N)
		for _, name := range implNames()[1:] {
			restore, _ := useImpl(name)
			for _, kind := range []string{"int4", "bf16"} {
				best := time.Hour
				for range 3 {
					c0 := threadCPU()
					reps := 0
					for threadCPU()-c0 < 100*time.Millisecond {
						if kind == "int4" {
							MatMulInt4(dst, x, m, sh.T)
						} else {
							MatMulBF16(dst, x, ws.bf16, sh.T, sh.K, sh.N)
						}
						reps++
					}
					best = min(best, (threadCPU()-c0)/time.Duration(reps))
				}
				fl := 2 * float64(sh.T*sh.K*sh.N) / best.Seconds() / 1e9
				fmt.Printf("%-5s %-7s T=%-3d K=%-5d N=%-6d cpu %10v  %7.2f GOP/s\n", kind, name, sh.T, sh.K, sh.N, best, fl)
			}
			restore()
		}
	}
}
