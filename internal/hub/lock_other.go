//go:build !unix

package hub

import (
	"os"
	"path/filepath"
)

// lockFile creates the lock file but cannot hold it against other
// processes on this platform; within one pull each blob has one writer.
func lockFile(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}
