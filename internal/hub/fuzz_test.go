package hub

import (
	"path/filepath"
	"strings"
	"testing"
)

// inside reports whether p is strictly under dir.
func inside(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	up := rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator))
	return err == nil && rel != "." && !up && !filepath.IsAbs(rel)
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"Qwen/Qwen3Guard-Stream-0.6B", "a/b@refs/pr/1", "a/b@..", "a/b@x/../../y", "../x", "a/b@main@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		c := Cache{Dir: "/cache"}
		repo := c.RepoDir(r.Repo)
		if !inside("/cache", repo) || filepath.Dir(repo) != "/cache" {
			t.Fatalf("%q: repo folder %s escapes the cache", s, repo)
		}
		if !inside(filepath.Join(repo, "refs"), c.refPath(r.Repo, r.Revision)) {
			t.Fatalf("%q: ref path %s escapes refs/", s, c.refPath(r.Repo, r.Revision))
		}
		if r2, err := ParseRef(r.String()); err != nil || r2 != r {
			t.Fatalf("%q: round trip %+v -> %q -> %+v, %v", s, r, r.String(), r2, err)
		}
	})
}

func FuzzParseRepoInfo(f *testing.F) {
	sha := strings.Repeat("0a", 20)
	f.Add([]byte(`{"id":"a/b","sha":"` + sha + `","siblings":[{"rfilename":"config.json","size":3},{"rfilename":"m.safetensors","lfs":{"sha256":"` + strings.Repeat("f", 64) + `","size":9}}]}`))
	f.Add([]byte(`{"sha":"` + sha + `","siblings":[{"rfilename":"a/../b"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseRepoInfo(b)
		if err != nil {
			return
		}
		if !isCommit(info.Commit) {
			t.Fatalf("commit %q accepted", info.Commit)
		}
		snap := Cache{Dir: "/cache"}.SnapshotDir("a/b", info.Commit)
		for _, f := range info.Files {
			if p := filepath.Join(snap, filepath.FromSlash(f.Name)); !inside(snap, p) {
				t.Fatalf("file %q lands at %s, outside the snapshot", f.Name, p)
			}
			if f.Size < -1 || (f.SHA256 != "" && len(f.SHA256) != 64) {
				t.Fatalf("bad file %+v", f)
			}
		}
	})
}

func FuzzNormalizeETag(f *testing.F) {
	for _, s := range []string{`"abc"`, `W/"x"`, `"../../x"`, `""`, `W/""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		e, err := normalizeETag(h)
		if err != nil {
			return
		}
		c := Cache{Dir: "/cache"}
		blobs := filepath.Join(c.RepoDir("a/b"), "blobs")
		if p := c.blobPath("a/b", e); filepath.Dir(p) != blobs {
			t.Fatalf("ETag %q gives blob path %s outside blobs/", h, p)
		}
		if p := c.lockPath("a/b", e); !inside(filepath.Join("/cache", ".locks"), p) {
			t.Fatalf("ETag %q gives lock path %s", h, p)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 1-1/*", "bytes 9-0/10", "bytes --1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		first, last, total, err := parseContentRange(h)
		if err != nil {
			return
		}
		if first < 0 || last < first || (total != -1 && total <= last) {
			t.Fatalf("%q: %d-%d/%d accepted", h, first, last, total)
		}
	})
}
