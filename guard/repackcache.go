package guard

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
)

// repackFile is the name of an AWQ model's repacked-weights file.
const repackFile = "awq-int4.pack"

// repackPaths are the places Load looks for, and writes, the
// repacked-weights file of the model in dir (see Options.RepackCache).
func repackPaths(dir, opt string) []string {
	switch opt {
	case "off":
		return nil
	case "", "auto":
		var paths []string
		// Beside the model, unless .streamguard there is a symbolic link:
		// the folder's author would choose where the load writes (and
		// which old temporary files it removes).
		if st, err := os.Lstat(filepath.Join(dir, ".streamguard")); err != nil || st.Mode()&os.ModeSymlink == 0 {
			paths = append(paths, filepath.Join(dir, ".streamguard", repackFile))
		}
		if c, err := os.UserCacheDir(); err == nil {
			paths = append(paths, filepath.Join(c, "streamguard", "repacked", modelCacheName(dir), repackFile))
		}
		return paths
	}
	return []string{filepath.Join(opt, modelCacheName(dir), repackFile)}
}

// modelCacheName names dir's folder in a shared cache: its base name and a
// hash of its absolute path, so that two models never share a file.
func modelCacheName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Base(abs) + "-" + hex.EncodeToString(sum[:6])
}

// RepackUse says how a load used the repacked-weights file of an AWQ model
// (Options.RepackCache).
type RepackUse struct {
	// Path is the file the weights were mapped from or written to; empty
	// when neither happened.
	Path string
	// Mapped: the repacked weights were mapped from Path, not repacked.
	Mapped bool
	// Wrote: the weights were repacked into a new file, now at Path.
	Wrote bool
	// Notes say why a file was not used (stale: written for other weights;
	// corrupt; owned by another user) or could not be written.
	Notes []string
}

// String is "mapped PATH" or "repacked, written to PATH", then the notes,
// joined by "; "; empty when nothing was mapped, written or noted.
func (r RepackUse) String() string {
	var parts []string
	switch {
	case r.Mapped:
		parts = append(parts, "mapped "+r.Path)
	case r.Wrote:
		parts = append(parts, "repacked, written to "+r.Path)
	}
	return strings.Join(append(parts, r.Notes...), "; ")
}
