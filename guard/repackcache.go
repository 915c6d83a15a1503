package guard

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamguard/streamguard/internal/qwen3"
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
		paths := []string{filepath.Join(dir, ".streamguard", repackFile)}
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

// describeRepack is Info.RepackCache for a load's use of the file.
func describeRepack(r qwen3.RepackCache) string {
	var parts []string
	switch {
	case r.Mapped:
		parts = append(parts, "mapped "+r.Path)
	case r.Wrote:
		parts = append(parts, "repacked, written to "+r.Path)
	}
	return strings.Join(append(parts, r.Notes...), "; ")
}
