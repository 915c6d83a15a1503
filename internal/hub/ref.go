package hub

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultRevision is the branch a reference without @REV names.
const DefaultRevision = "main"

// Ref names a model repository at a revision: ORG/NAME[@REV].
type Ref struct {
	Repo     string // ORG/NAME
	Revision string // branch, tag or commit; DefaultRevision when omitted
}

func (r Ref) String() string {
	if r.Revision == DefaultRevision {
		return r.Repo
	}
	return r.Repo + "@" + r.Revision
}

// maxRepoIDLen is the hub's limit on a repository id.
const maxRepoIDLen = 96

// ParseRef reads ORG/NAME[@REV]. The id follows the hub's rules (letters,
// digits, '-', '_' and '.', not starting or ending with '-' or '.', no
// "--" or ".."); the revision may contain '/' (refs/pr/1) but no empty,
// "." or ".." segment, since it names a file under refs/.
func ParseRef(s string) (Ref, error) {
	repo, rev, hasRev := strings.Cut(s, "@")
	if err := checkRepoID(repo); err != nil {
		return Ref{}, fmt.Errorf("%q: %w", s, err)
	}
	if !hasRev {
		return Ref{Repo: repo, Revision: DefaultRevision}, nil
	}
	if err := checkRevision(rev); err != nil {
		return Ref{}, fmt.Errorf("%q: %w", s, err)
	}
	return Ref{Repo: repo, Revision: rev}, nil
}

// IsRepoID reports whether s has the form of a hub reference
// (ORG/NAME[@REV]), as opposed to a folder path.
func IsRepoID(s string) bool {
	_, err := ParseRef(s)
	return err == nil
}

// LooksLikePath reports whether a model argument that does not exist was
// meant as a folder rather than a hub id: it starts like a path (./, ../,
// /, ~) or its parent folder exists (models/0.6b with a models folder).
func LooksLikePath(ref string) bool {
	for _, p := range []string{"./", "../", "/", "~", "." + string(filepath.Separator), ".." + string(filepath.Separator), string(filepath.Separator)} {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	parent := filepath.Dir(filepath.Clean(ref))
	if parent == "." {
		return false
	}
	st, err := os.Stat(parent)
	return err == nil && st.IsDir()
}

func checkRepoID(id string) error {
	org, name, ok := strings.Cut(id, "/")
	if !ok || strings.Contains(name, "/") {
		return errors.New("a repository id is ORG/NAME")
	}
	if len(id) > maxRepoIDLen {
		return fmt.Errorf("repository id longer than %d characters", maxRepoIDLen)
	}
	if strings.Contains(id, "--") || strings.Contains(id, "..") {
		return errors.New(`a repository id cannot contain "--" or ".."`)
	}
	for _, part := range []string{org, name} {
		if part == "" {
			return errors.New("empty organisation or name")
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			word := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
			if !word && c != '-' && c != '.' {
				return fmt.Errorf("character %q is not allowed in a repository id", c)
			}
			if !word && (i == 0 || i == len(part)-1) {
				return fmt.Errorf("%q must start and end with a letter, digit or '_'", part)
			}
		}
	}
	return nil
}

// maxRevisionLen bounds a revision (git refs are file names).
const maxRevisionLen = 200

func checkRevision(rev string) error {
	if rev == "" {
		return errors.New("empty revision after '@'")
	}
	if len(rev) > maxRevisionLen {
		return fmt.Errorf("revision longer than %d characters", maxRevisionLen)
	}
	for i := 0; i < len(rev); i++ {
		c := rev[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`\:*?"<>|~^[`, c) >= 0 {
			return fmt.Errorf("character %q is not allowed in a revision", c)
		}
	}
	// The hub's revisions are commits or git refs (branches, tags,
	// refs/pr/N), so git's rules for ref names apply: a revision that
	// breaks them could never resolve, and the rules about dots also keep
	// every revision a plain path under refs/ in the cache.
	bad := func(why string) error { return fmt.Errorf("revision %q is not a git ref name: %s", rev, why) }
	switch {
	case strings.Contains(rev, ".."):
		return bad(`it contains ".."`)
	case strings.Contains(rev, "@{") || rev == "@":
		return bad(`it is "@" or contains "@{"`)
	case strings.HasSuffix(rev, "."):
		return bad(`it ends in "."`)
	}
	for _, seg := range strings.Split(rev, "/") {
		switch {
		case seg == "":
			return bad("it has an empty segment")
		case seg[0] == '.':
			return bad(`a segment starts with "."`)
		case strings.HasSuffix(seg, ".lock"):
			return bad(`a segment ends in ".lock"`)
		}
	}
	return nil
}

// isCommit reports whether rev is a full commit hash, which never moves.
func isCommit(rev string) bool {
	return len(rev) == 40 && isLowerHex(rev)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}
