package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// fileIsTerminal asks the terminal driver (no cgo): /dev/null and other
// character devices that are not terminals answer no.
func fileIsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
