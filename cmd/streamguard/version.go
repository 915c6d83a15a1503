package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// release is the version of this source tree; a build's full version
// string adds what the Go toolchain recorded about it (buildVersion).
const release = "0.1.0-dev"

// version is the string `streamguard --version` prints and model cards and
// provenance metadata carry: the release, the module version the build was
// made from ("devel" for a checkout) and, when built in a VCS checkout, the
// revision, marked "+dirty" when the tree had changes.
var version = buildVersion(release, debug.ReadBuildInfo)

func buildVersion(release string, read func() (*debug.BuildInfo, bool)) string {
	bi, ok := read()
	if !ok {
		return release
	}
	parts := []string{release}
	mod := strings.Trim(bi.Main.Version, "()")
	if mod == "" {
		mod = "devel"
	}
	parts = append(parts, mod)
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	// A VCS build's pseudo-version already names the revision.
	if rev = rev[:min(len(rev), 12)]; rev != "" && !strings.Contains(mod, rev) {
		parts = append(parts, "rev "+rev+dirty)
	}
	return parts[0] + " (" + strings.Join(parts[1:], ", ") + ")"
}

func init() {
	register(&command{
		name:    "version",
		summary: "print the streamguard version (also --version)",
		run: func(args []string, stdout, stderr io.Writer) error {
			fs := newFlagSet("version", "", stderr)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "streamguard", version)
			return nil
		},
	})
}
