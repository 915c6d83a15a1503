package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentLinksKeepTheBlob: two pulls sharing a cache (two replicas)
// link the same snapshot file at once. Each makes its entry under a name of
// its own and renames it over the file, so both succeed, the entry is the
// relative symlink, and the blob keeps its bytes. When the loser created
// the file itself after the winner's symlink was there (its symlink and
// hard link failing with EEXIST, then a copy's create), it truncated the
// blob through the link.
func TestConcurrentLinksKeepTheBlob(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	repo, etag := "o/m", strings.Repeat("b", 64)
	data := []byte(strings.Repeat("weights!", 4096))
	blob := c.blobPath(repo, etag)
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		t.Fatal(err)
	}
	want := filepath.FromSlash("../../blobs/" + etag)
	for i := range 300 {
		if err := os.WriteFile(blob, data, 0o644); err != nil {
			t.Fatal(err)
		}
		commit := fmt.Sprintf("%040x", i)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for g := range errs {
			wg.Go(func() {
				<-start
				errs[g] = c.link(repo, commit, "model.safetensors", etag)
			})
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: link errors %v", i, errs)
		}
		if got, err := os.ReadFile(blob); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: blob holds %d bytes (%v), want its %d", i, len(got), err, len(data))
		}
		snap := c.SnapshotDir(repo, commit)
		if target, err := os.Readlink(filepath.Join(snap, "model.safetensors")); err != nil || target != want {
			t.Fatalf("round %d: entry -> %q (%v), want %q", i, target, err, want)
		}
		if ents, _ := os.ReadDir(snap); len(ents) != 1 {
			t.Fatalf("round %d: snapshot holds %d entries, want 1 (no temporary left)", i, len(ents))
		}
	}
	// The copy fallback never writes into what is there, a link included.
	entry := filepath.Join(c.SnapshotDir(repo, fmt.Sprintf("%040x", 0)), "model.safetensors")
	if err := copyFile(blob, entry); !errors.Is(err, fs.ErrExist) {
		t.Errorf("copyFile onto an existing link: %v, want %v", err, fs.ErrExist)
	}
	if got, _ := os.ReadFile(blob); !bytes.Equal(got, data) {
		t.Errorf("blob holds %d bytes after the copy, want %d", len(got), len(data))
	}
}

// TestFileNamesWithControlCharactersRefused: names from the hub become
// cache paths and are printed by `streamguard pull`; one with a terminal
// escape, a newline or a bidirectional override is refused, with the name
// quoted in the error. Other Unicode is a file name like any other.
func TestFileNamesWithControlCharactersRefused(t *testing.T) {
	for name, want := range map[string]string{
		"\x1b]0;pwned\x07x.json": `file name "\x1b]0;pwned\ax.json": has the control character U+001B`,
		"a\nb.json":              `file name "a\nb.json": has the control character U+000A`,
		"\x1b[2J":                `file name "\x1b[2J": has the control character U+001B`,
		"a\rb":                   `file name "a\rb": has the control character U+000D`,
		"x\x7f":                  `file name "x\x7f": has the control character U+007F`,
		"csi\u009b2J":            `file name "csi\u009b2J": has the control character U+009B`,
		"evil\u202egpj.exe":      `file name "evil\u202egpj.exe": has the control character U+202E`,
		"isolate\u2066x\u2069":   `file name "isolate\u2066x\u2069": has the control character U+2066`,
		"line\u2028sep":          `file name "line\u2028sep": has the control character U+2028`,
		"bad\xffutf8":            `file name "bad\xffutf8": not UTF-8`,
		"sub/\x1b[31mred.txt":    `file name "sub/\x1b[31mred.txt": has the control character U+001B`,
	} {
		if err := checkFileName(name); err == nil || err.Error() != want {
			t.Errorf("checkFileName(%q) = %v, want %s", name, err, want)
		}
	}
	for _, name := range []string{"模型/config.json", "naïve.txt", "emoji-🤗.md", "tab less name.json", "a\u00a0b"} {
		if err := checkFileName(name); err != nil {
			t.Errorf("checkFileName(%q): %v", name, err)
		}
	}
	// The model API's file list is checked with it.
	sha := strings.Repeat("ab", 20)
	_, err := parseRepoInfo([]byte(`{"sha":"` + sha + `","siblings":[{"rfilename":"ok.json"},{"rfilename":"a\nb.json"}]}`))
	if want := `model info: sibling 1: file name "a\nb.json": has the control character U+000A`; err == nil || err.Error() != want {
		t.Errorf("parseRepoInfo: %v, want %s", err, want)
	}
}
