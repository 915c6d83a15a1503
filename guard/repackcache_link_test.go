package guard

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestRepackCacheSkipsModelSymlink: the default repacked-weights file goes
// to MODEL/.streamguard/awq-int4.pack, unless .streamguard is a symbolic
// link (a model folder from a tarball or a shared volume): then the load
// would write (and remove old temporary files) where the folder's author
// chose, so it uses the user's cache instead.
func TestRepackCacheSkipsModelSymlink(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(root, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, ".streamguard")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", filepath.Join(root, "usercache"))
	m, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	use := m.Info().RepackCache
	m.Close()
	if _, err := os.Stat(filepath.Join(elsewhere, repackFile)); err == nil {
		t.Errorf("the load wrote %s through the model folder's .streamguard symlink, outside the model folder (RepackCache: %v)", filepath.Join(elsewhere, repackFile), use)
	}
	if !use.Wrote || !strings.HasPrefix(use.Path, filepath.Join(root, "usercache")) {
		t.Errorf("RepackCache %+v: want the file written to the user's cache", use)
	}
}
