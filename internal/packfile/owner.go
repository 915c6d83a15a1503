package packfile

import (
	"os"

	"github.com/streamguard/streamguard/internal/ownercheck"
)

// checkOwner refuses a file, or the folder holding it, that someone other
// than this process's user (or root) owns or that every user may write:
// the file decides the weights a guard runs, so one planted in a shared
// folder (a --repack-cache under /tmp) must not be mapped, however well
// formed. The rule is ownercheck's, shared with the feature cache.
func checkOwner(path string, fi os.FileInfo) error { return ownercheck.File(path, fi) }

// checkFolder applies checkOwner's rule to the folder a file is written
// to: a file there would be refused when read.
func checkFolder(dir string) error { return ownercheck.Folder(dir) }
