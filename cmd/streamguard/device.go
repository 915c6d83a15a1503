package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/streamguard/streamguard/guard"
)

// deviceFlag adds --device to a command that runs a model.
func deviceFlag(fs *flag.FlagSet) *string {
	return fs.String("device", "cpu", "where the model runs: cpu, auto (a GPU when one can take the model, else the CPU), cuda or cuda:N (needs a build with -tags cuda)")
}

// reportDevice says on stderr where the model runs when it is not the
// plain CPU choice, and why auto stayed on the CPU.
func reportDevice(stderr io.Writer, asked string, m *guard.Model) {
	i := m.Info()
	switch {
	case i.DeviceNote != "":
		fmt.Fprintf(stderr, "device: %s (%s: %s)\n", i.Device, asked, i.DeviceNote)
	case asked != "cpu" && asked != "":
		fmt.Fprintf(stderr, "device: %s\n", i.Device)
	}
}
