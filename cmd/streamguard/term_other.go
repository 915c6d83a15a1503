//go:build !linux

package main

import "os"

// fileIsTerminal reports a character device (a terminal, or /dev/null).
func fileIsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
