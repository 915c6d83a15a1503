//go:build unix

package packfile

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// checkOwner refuses a file, or the folder holding it, that someone other
// than this process's user (or root) owns or that every user may write:
// the file decides the weights a guard runs, so one planted in a shared
// folder (a --repack-cache under /tmp) must not be mapped, however well
// formed. Group-writable is allowed: volumes shared by a deployment's
// containers are often made so (Kubernetes' fsGroup).
func checkOwner(path string, fi os.FileInfo) error {
	if err := trusted(path, fi); err != nil {
		return err
	}
	return checkFolder(filepath.Dir(path))
}

// checkFolder applies checkOwner's rule to the folder a file is written
// to: a file there would be refused when read.
func checkFolder(dir string) error {
	di, err := os.Stat(dir)
	if err != nil {
		return err
	}
	return trusted(dir, di)
}

func trusted(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := uint32(os.Getuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("%s: owned by uid %d, not this user (%d) or root", path, st.Uid, uid)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("%s: writable by every user (mode %v)", path, fi.Mode().Perm())
	}
	return nil
}
