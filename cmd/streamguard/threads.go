package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/streamguard/streamguard/internal/kernels"
)

// threadsValue is a --threads flag: 0 (GOMAXPROCS) to kernels.MaxThreads,
// refused at parsing otherwise (a usage error), as guard.Load refuses it.
type threadsValue int

func (t *threadsValue) String() string { return strconv.Itoa(int(*t)) }

func (t *threadsValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > kernels.MaxThreads {
		return fmt.Errorf("want 0 (GOMAXPROCS) to %d", kernels.MaxThreads)
	}
	*t = threadsValue(n)
	return nil
}

// threadsFlag defines --threads on fs.
func threadsFlag(fs *flag.FlagSet, usage string) *int {
	var t threadsValue
	fs.Var(&t, "threads", usage)
	return (*int)(&t)
}
