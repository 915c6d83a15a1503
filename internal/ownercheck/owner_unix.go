//go:build unix

package ownercheck

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// File refuses a file, or the folder holding it, that someone other than
// this process's user (or root) owns or that every user may write. fi is
// the file's FileInfo, best from the open file (Fstat), so that the file
// checked is the file read.
func File(path string, fi os.FileInfo) error {
	if err := trusted(path, fi); err != nil {
		return err
	}
	return Folder(filepath.Dir(path))
}

// Folder applies File's rule to a folder, such as the one a file is about
// to be written to: a file there would be refused when read.
func Folder(dir string) error {
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
