//go:build !unix

package packfile

import "os"

// checkOwner has no ownership to check on this system.
func checkOwner(string, os.FileInfo) error { return nil }

// checkFolder has no ownership to check on this system.
func checkFolder(string) error { return nil }
