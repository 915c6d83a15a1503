package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
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

func FuzzMetaFromHeaders(f *testing.F) {
	commit := strings.Repeat("0a", 20)
	f.Add(commit, `"`+strings.Repeat("f", 64)+`"`, "", "123", "", int64(-1))
	f.Add(commit, "", `W/"abc"`, "", "7", int64(7))
	f.Add(commit, `"x"`, "", "", "", int64(42))
	f.Add(" "+commit+" ", `"x"`, "", "-1", "", int64(-1))
	f.Add("main", `"../x"`, "", "1e3", " 9 ", int64(-5))
	f.Fuzz(func(t *testing.T, commit, linkedETag, etag, linkedSize, contentLength string, parsedLength int64) {
		h := http.Header{}
		for k, v := range map[string]string{"X-Repo-Commit": commit, "X-Linked-Etag": linkedETag, "ETag": etag,
			"X-Linked-Size": linkedSize, "Content-Length": contentLength} {
			if v != "" {
				h.Set(k, v)
			}
		}
		m, err := metaFromHeaders(h, "http://cdn/x", parsedLength)
		if err != nil {
			var pe *permanentError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is retried: the same headers would come again", err)
			}
			return
		}
		if !isCommit(m.Commit) || m.Commit != strings.TrimSpace(commit) {
			t.Fatalf("commit %q from X-Repo-Commit %q", m.Commit, commit)
		}
		// The blob id is a fixed point of normalizeETag, from the header
		// that wins, and names a file in blobs/.
		raw := linkedETag
		if raw == "" {
			raw = etag
		}
		if e, err := normalizeETag(raw); err != nil || e != m.ETag {
			t.Fatalf("ETag %q from %q (normalizeETag: %q, %v)", m.ETag, raw, e, err)
		}
		if e, err := normalizeETag(m.ETag); err != nil || e != m.ETag {
			t.Fatalf("ETag %q is not normalized", m.ETag)
		}
		c := Cache{Dir: "/cache"}
		if p := c.blobPath("a/b", m.ETag); filepath.Dir(p) != filepath.Join(c.RepoDir("a/b"), "blobs") {
			t.Fatalf("ETag %q gives blob path %s", m.ETag, p)
		}
		// A size is never negative, and -1 only when none was said.
		sz := linkedSize
		if sz == "" {
			sz = contentLength
		}
		switch {
		case sz != "":
			n, err := strconv.ParseInt(strings.TrimSpace(sz), 10, 64)
			if err != nil || n < 0 || m.Size != n {
				t.Fatalf("size %d from header %q", m.Size, sz)
			}
		case parsedLength >= 0:
			if m.Size != parsedLength {
				t.Fatalf("size %d, want the transport's %d", m.Size, parsedLength)
			}
		case m.Size != -1:
			t.Fatalf("size %d with no size given", m.Size)
		}
		if m.Location != "http://cdn/x" {
			t.Fatalf("location %q", m.Location)
		}
	})
}

func FuzzErrorBodyMessage(f *testing.F) {
	for _, s := range []string{`{"error":"Repository not found"}`, `{"error":"a\nb\u001b[2J"}`, "Bad gateway\r\nx", "<html>", `{"error":1}`, "\x1b]0;x\x07", "\xff\xfe"} {
		f.Add([]byte(s), "Repository not found")
	}
	f.Fuzz(func(t *testing.T, b []byte, msg string) {
		got := errorBodyMessage(b)
		checkPrintable(t, got)
		// A message that is already one printable line comes back as is
		// from {"error": msg}.
		if printableMessage(msg) == msg && msg != "" {
			j, _ := json.Marshal(map[string]string{"error": msg})
			if got := errorBodyMessage(j); got != msg {
				t.Fatalf("body %s: message %q, want %q", j, got, msg)
			}
		}
		if p := printableMessage(msg); p != printableMessage(p) {
			t.Fatalf("printableMessage is not idempotent on %q: %q", msg, p)
		}
	})
}

// checkPrintable fails unless s is what printableMessage promises: one
// line of valid UTF-8, no character a terminal acts on, single spaces
// between words, at most maxMessageLen bytes and "…".
func checkPrintable(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) || len(s) > maxMessageLen+len("…") {
		t.Fatalf("message %q: invalid UTF-8 or %d bytes", s, len(s))
	}
	if strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") || strings.Contains(s, "  ") {
		t.Fatalf("message %q: spaces not collapsed", s)
	}
	for _, r := range s {
		if unsafeInName(r) || (unicode.IsSpace(r) && r != ' ') {
			t.Fatalf("message %q has %U", s, r)
		}
	}
}

func FuzzIndexShards(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":1},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../../etc/passwd"}}`))
	f.Add([]byte(`{"weight_map":{"a":"config.json","b":"sub/x\u001b[2J"}}`))
	f.Add([]byte(`{"weight_map":{}}`))
	f.Add([]byte(`{"weight_map":{"a":1}}`))
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644); err != nil {
		f.Fatal(err)
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	f.Fuzz(func(t *testing.T, b []byte) {
		shards, err := indexShards(b)
		if err == nil {
			for i, s := range shards {
				if checkFileName(s) != nil || !inside(dir, filepath.Join(dir, filepath.FromSlash(s))) {
					t.Fatalf("shard %q accepted", s)
				}
				if i > 0 && shards[i-1] >= s {
					t.Fatalf("shards %q not sorted and unique", shards)
				}
			}
		}
		// checkModelFolder on a folder with config.json and this index
		// only: it fails as the index does, else lists exactly the shards
		// that are not these two files.
		if err := os.WriteFile(index, b, 0o644); err != nil {
			t.Fatal(err)
		}
		got := checkModelFolder(dir)
		var missing []string
		for _, s := range shards {
			if s != "config.json" && s != "model.safetensors.index.json" {
				missing = append(missing, s)
			}
		}
		switch {
		case err != nil:
			if want := index + ": " + err.Error(); got == nil || got.Error() != want {
				t.Fatalf("checkModelFolder: %v, want %s", got, want)
			}
		case len(missing) == 0:
			if got != nil {
				t.Fatalf("checkModelFolder: %v, want nil for shards %q", got, shards)
			}
		default:
			if want := fmt.Sprintf("%s: missing shards %v: %v", dir, missing, ErrNotCached); got == nil || got.Error() != want || !errors.Is(got, ErrNotCached) {
				t.Fatalf("checkModelFolder: %v, want %s", got, want)
			}
		}
	})
}

func FuzzCacheCommit(f *testing.F) {
	commit := strings.Repeat("0a", 20)
	f.Add("main", []byte(commit))
	f.Add("v1.0", []byte(commit+"\n"))
	f.Add("refs/pr/1", []byte(" "+strings.ToUpper(commit)))
	f.Add(commit, []byte("main"))
	f.Add("main", []byte(commit+commit))
	f.Add("main", []byte{})
	f.Fuzz(func(t *testing.T, rev string, content []byte) {
		ref, err := ParseRef("a/b@" + rev)
		if err != nil {
			return
		}
		c := Cache{Dir: t.TempDir()}
		if isCommit(ref.Revision) {
			// A commit hash stands for itself; no file is read.
			if got, err := c.Commit(ref); err != nil || got != ref.Revision {
				t.Fatalf("Commit(%s) = %q, %v", ref, got, err)
			}
			return
		}
		if _, err := c.Commit(ref); !errors.Is(err, ErrNotCached) {
			t.Fatalf("Commit(%s) with no ref file: %v, want ErrNotCached", ref, err)
		}
		p := c.refPath(ref.Repo, ref.Revision)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := c.Commit(ref)
		want := strings.TrimSpace(string(content))
		switch {
		case isCommit(want):
			if err != nil || got != want {
				t.Fatalf("ref file %q: Commit = %q, %v; want %s", content, got, err, want)
			}
		case err == nil:
			t.Fatalf("ref file %q: Commit = %q accepted", content, got)
		case !strings.Contains(err.Error(), "is not a commit hash"):
			t.Fatalf("ref file %q: error %v", content, err)
		}
		if err == nil && !isCommit(got) {
			t.Fatalf("Commit returned %q, not 40 hex digits", got)
		}
	})
}
