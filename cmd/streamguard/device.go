package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/streamguard/streamguard/guard"
)

// deviceFlag adds --device to a command that runs a model.
func deviceFlag(fs *flag.FlagSet) *string {
	d := "cpu"
	// Checked as it is parsed, so that a misspelt device is a usage error
	// (exit 2) before any model is loaded; whether this build can use a
	// GPU is the load's to say.
	fs.Func("device", "where the model runs (`device`): cpu, auto (a GPU when one can take the model, else the CPU), cuda or cuda:N (needs a build with -tags cuda) (default cpu)", func(v string) error {
		n, isCUDA := strings.CutPrefix(v, "cuda:")
		if v == "cpu" || v == "auto" || v == "cuda" || isCUDA && n != "" && strings.Trim(n, "0123456789") == "" {
			d = v
			return nil
		}
		return fmt.Errorf("want cpu, auto, cuda or cuda:N, got %q", v)
	})
	return &d
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
