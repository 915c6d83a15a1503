package hub

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

func (c Cache) blobPath(repo, etag string) string {
	return filepath.Join(c.RepoDir(repo), "blobs", etag)
}

// SnapshotDir is the folder holding the files of repo at commit.
func (c Cache) SnapshotDir(repo, commit string) string {
	return filepath.Join(c.RepoDir(repo), "snapshots", commit)
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

// writeRef records that rev pointed to commit, as huggingface_hub does
// (nothing to record when rev is the commit itself).
func (c Cache) writeRef(repo, rev, commit string) error {
	if rev == commit {
		return nil
	}
	path := c.refPath(repo, rev)
	if b, err := os.ReadFile(path); err == nil && string(b) == commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(commit), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// link makes snapshots/COMMIT/FILE point to the blob with a relative
// symbolic link (so the cache can be moved), like huggingface_hub; where
// symbolic links are not allowed it falls back to a hard link, then a copy.
func (c Cache) link(repo, commit, file, etag string) error {
	dst := filepath.Join(c.SnapshotDir(repo, commit), filepath.FromSlash(file))
	src := c.blobPath(repo, etag)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(dst), src)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(dst); err == nil && cur == rel {
		return nil
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(rel, dst); err == nil {
		return nil
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
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
// snapshot folder: the names come from the server.
func checkFileName(name string) error {
	if name == "" || len(name) > maxFileNameLen {
		return fmt.Errorf("file name %q: empty or longer than %d bytes", name, maxFileNameLen)
	}
	if strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return fmt.Errorf("file name %q: absolute, or has a backslash or NUL", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("file name %q: empty, '.' or '..' path segment", name)
		}
	}
	return nil
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
