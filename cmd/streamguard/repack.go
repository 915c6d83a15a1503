package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/streamguard/streamguard/guard"
)

// repackCacheFlag adds --repack-cache to a command that loads a model.
func repackCacheFlag(fs *flag.FlagSet) *string {
	return fs.String("repack-cache", "auto", "where AWQ weights repacked for the CPU kernels are kept between loads, so that later loads map them instead of repacking: auto (a .streamguard folder in the model folder, else the user cache folder), off, or a folder")
}

// reportRepack says on stderr when a load wrote the repacked-weights file
// or could not use or write one; a load that mapped it is quiet.
func reportRepack(stderr io.Writer, m *guard.Model) {
	if r := m.Info().RepackCache; r.Wrote || len(r.Notes) > 0 {
		fmt.Fprintf(stderr, "repack cache: %s\n", r)
	}
}
