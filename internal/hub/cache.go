package hub

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Cache is a Hugging Face hub cache folder ($HF_HUB_CACHE).
type Cache struct {
	Dir string
}

// ErrNotCached reports that a revision or file is not in the cache.
var ErrNotCached = errors.New("not in the cache")

// repoFolder is the cache's name for a model repository: models--ORG--NAME.
func repoFolder(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

// RepoDir is the repository's folder in the cache.
func (c Cache) RepoDir(repo string) string { return filepath.Join(c.Dir, repoFolder(repo)) }

// A repository's folder holds its files' contents in blobsDir (by ETag)
// and, per commit, a folder in snapshotsDir of links to them.
const blobsDir, snapshotsDir = "blobs", "snapshots"

func (c Cache) blobPath(repo, etag string) string {
	return filepath.Join(c.RepoDir(repo), blobsDir, etag)
}

// SnapshotDir is the folder holding the files of repo at commit.
func (c Cache) SnapshotDir(repo, commit string) string {
	return filepath.Join(c.RepoDir(repo), snapshotsDir, commit)
}

// SnapshotFile returns the file that name in dir links to, when dir is a
// snapshot folder of the cache (as typed: a trailing slash, a link to it)
// and the file is a regular file in the same repository's blobs. Links
// elsewhere are not followed: a copy of a model folder must not carry a
// private file its link points at into a model the user may share.
func SnapshotFile(dir, name string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	snap, err := filepath.EvalSymlinks(abs)
	if err != nil || filepath.Base(filepath.Dir(snap)) != snapshotsDir {
		return "", false
	}
	target, err := filepath.EvalSymlinks(filepath.Join(snap, name))
	if err != nil {
		return "", false
	}
	if st, err := os.Stat(target); err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	rel, err := filepath.Rel(filepath.Join(filepath.Dir(filepath.Dir(snap)), blobsDir), target)
	return target, err == nil && filepath.IsLocal(rel)
}

func (c Cache) refPath(repo, rev string) string {
	return filepath.Join(c.RepoDir(repo), "refs", filepath.FromSlash(rev))
}

// lockPath is where huggingface_hub keeps the lock of a blob download.
func (c Cache) lockPath(repo, etag string) string {
	return filepath.Join(c.Dir, ".locks", repoFolder(repo), etag+".lock")
}

// Commit resolves ref's revision to a commit from the cache alone: a commit
// hash stands for itself, a branch or tag is read from refs/.
func (c Cache) Commit(ref Ref) (string, error) {
	if isCommit(ref.Revision) {
		return ref.Revision, nil
	}
	b, err := os.ReadFile(c.refPath(ref.Repo, ref.Revision))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s: revision %q: %w", ref.Repo, ref.Revision, ErrNotCached)
	}
	if err != nil {
		return "", err
	}
	commit := strings.TrimSpace(string(b))
	if !isCommit(commit) {
		return "", fmt.Errorf("%s: %q is not a commit hash", c.refPath(ref.Repo, ref.Revision), commit)
	}
	return commit, nil
}

// writeRef records that rev pointed to commit, as huggingface_hub does.
// Nothing is recorded for a revision that is a commit hash: it stands for
// itself (Commit never reads refs/COMMIT), and a file by that name holding
// another commit would only mislead another tool.
func (c Cache) writeRef(repo, rev, commit string) error {
	if rev == commit || isCommit(rev) {
		return nil
	}
	path := c.refPath(repo, rev)
	if b, err := os.ReadFile(path); err == nil && string(b) == commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// A temporary file of its own (two pulls may write the ref at once),
	// renamed over the ref.
	tmp, err := os.CreateTemp(filepath.Dir(path), tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(commit)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// tmpPrefix starts the names of the files made beside a ref or a snapshot
// entry before they are renamed over it.
const tmpPrefix = ".streamguard-tmp-"

// link makes snapshots/COMMIT/FILE point to the blob with a relative
// symbolic link (so the cache can be moved), like huggingface_hub; where
// symbolic links are not allowed it falls back to a hard link, then a copy.
//
// The entry is made under a temporary name in the same folder and renamed
// over FILE, and FILE itself is never opened for writing: another process
// sharing the cache may have just linked it to the blob, and writing
// through that link (a copy's create) would truncate the blob itself.
func (c Cache) link(repo, commit, file, etag string) error {
	dst := filepath.Join(c.SnapshotDir(repo, commit), filepath.FromSlash(file))
	src := c.blobPath(repo, etag)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, src)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(dst); err == nil && cur == rel {
		return nil
	}
	// The name is random, not derived from FILE (which may already be as
	// long as a file name can be), and unique to this call.
	tmp := filepath.Join(dir, tmpPrefix+rand.Text())
	if err := os.Symlink(rel, tmp); err != nil {
		if err := os.Link(src, tmp); err != nil {
			if err := copyFile(src, tmp); err != nil {
				os.Remove(tmp)
				return err
			}
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// copyFile copies src to the new file dst; it fails rather than write
// into a file (or through a link) that exists.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// maxFileNameLen bounds a repository file name.
const maxFileNameLen = 1024

// checkFileName refuses a repository file name that could escape the
// snapshot folder, or that would do more than name a file where it is
// printed (`streamguard pull` lists the files on the terminal): the names
// come from the server.
func checkFileName(name string) error {
	if name == "" || len(name) > maxFileNameLen {
		return fmt.Errorf("file name %q: empty or longer than %d bytes", name, maxFileNameLen)
	}
	if strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return fmt.Errorf("file name %q: absolute, or has a backslash or NUL", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("file name %q: not UTF-8", name)
	}
	for _, r := range name {
		if unsafeInName(r) {
			return fmt.Errorf("file name %q: has the control character %U", name, r)
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("file name %q: empty, '.' or '..' path segment", name)
		}
	}
	return nil
}

// unsafeInName reports the characters no file name of a model repository
// needs and a terminal may act on: the C0 and C1 controls (newlines,
// escape sequences: ESC, and CSI U+009B) and DEL; the line and paragraph
// separators; and the bidirectional controls, which make a name display
// as another ("Trojan Source"). Other Unicode (a name in Chinese, an
// emoji) is allowed.
func unsafeInName(r rune) bool {
	switch {
	case unicode.IsControl(r): // U+0000–U+001F, U+007F–U+009F
		return true
	case r == '\u2028' || r == '\u2029':
		return true
	case r == '\u061c' || r == '\u200e' || r == '\u200f',
		r >= '\u202a' && r <= '\u202e',
		r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// maxETagLen bounds a blob name.
const maxETagLen = 128

// normalizeETag turns an ETag header into a blob name: the weak prefix W/
// and the quotes go, as in huggingface_hub. It refuses what cannot be a
// file name, since the blob file is named by it.
func normalizeETag(h string) (string, error) {
	e := strings.TrimSpace(h)
	e = strings.TrimPrefix(e, "W/")
	e = strings.Trim(e, `"`)
	if e == "" || len(e) > maxETagLen || e == "." || e == ".." {
		return "", fmt.Errorf("ETag %q is not a usable blob id", h)
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("ETag %q has character %q, not usable as a blob id", h, c)
		}
	}
	return e, nil
}
