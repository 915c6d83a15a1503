package train

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFeatureCacheRefusesUntrustedFiles: cached features decide the heads
// trained on them, so a features file, or the folder holding it, that
// another user owns or every user may write (a --cache-dir under /tmp) is
// an error, as packfile refuses such a repacked-weights file; not a stale
// entry to overwrite, and never features to train on.
func TestFeatureCacheRefusesUntrustedFiles(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef01234567"
	poisoned := []float32{666, 666, 666, 666}
	type untrusted struct {
		name              string
		fileMode, dirMode os.FileMode
		fileUID           int // -1: as written
		want              func(dir, path string) string
	}
	cases := []untrusted{
		{"world-writable file", 0o666, 0o755, -1,
			func(dir, path string) string {
				return "feature cache: " + path + ": writable by every user (mode -rw-rw-rw-)"
			}},
		{"world-writable folder", 0o644, 0o777, -1,
			func(dir, path string) string {
				return "feature cache: " + dir + ": writable by every user (mode -rwxrwxrwx)"
			}},
	}
	if os.Getuid() == 0 { // only root can give the file away
		cases = append(cases, untrusted{"another user's file", 0o644, 0o755, 4242,
			func(dir, path string) string {
				return "feature cache: " + path + ": owned by uid 4242, not this user (0) or root"
			}})
	}
	for _, tc := range cases {
		dir := filepath.Join(t.TempDir(), "shared")
		if err := storeCache(dir, key, poisoned, 2, 2); err != nil {
			t.Fatal(err)
		}
		path := cachePath(dir, key)
		if err := os.Chmod(path, tc.fileMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, tc.dirMode); err != nil {
			t.Fatal(err)
		}
		if tc.fileUID >= 0 {
			if err := os.Chown(path, tc.fileUID, tc.fileUID); err != nil {
				t.Fatal(err)
			}
		}
		feats, stale, err := loadCache(dir, key, 2, 2)
		if want := tc.want(dir, path); feats != nil || stale != nil || err == nil || err.Error() != want {
			t.Errorf("%s: loadCache = %v, stale %v, err %v\nwant error %s", tc.name, feats, stale, err, want)
		}
	}

	// A world-writable folder is refused before anything is extracted for
	// it, and stored there.
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	want := "feature cache: " + dir + ": writable by every user (mode -rwxrwxrwx)"
	if feats, stale, err := loadCache(dir, key, 2, 2); feats != nil || stale != nil || err == nil || err.Error() != want {
		t.Errorf("empty folder: loadCache = %v, stale %v, err %v\nwant error %s", feats, stale, err, want)
	}
	if err := storeCache(dir, key, poisoned, 2, 2); err == nil || err.Error() != want {
		t.Errorf("storeCache = %v, want error %s", err, want)
	}
}
