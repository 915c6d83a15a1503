package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/hub"
)

// TestModelRefMessages checks what a user sees for a model argument that
// does not exist: "no such folder" for anything that looks like a path,
// and hub messages that name gen-model for machines without the hub.
func TestModelRefMessages(t *testing.T) {
	base := t.TempDir()
	cache := filepath.Join(base, "cache")
	if err := os.Mkdir(filepath.Join(base, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(base)
	env := hub.Env{Endpoint: "http://127.0.0.1:9", CacheDir: cache}
	old := hubEnv
	hubEnv = func() hub.Env { return env }
	t.Cleanup(func() { hubEnv = old })

	abs := filepath.Join(base, "absent")
	for _, ref := range []string{"./absent", "../absent-sg", abs, "~/absent", "models/0.6b", "absent"} {
		code, out, errs := run(t, "moderate", "--model", ref, "--prompt", "x")
		if want := "streamguard moderate: no such folder: " + ref + "\n"; code != 1 || out != "" || errs != want {
			t.Errorf("moderate --model %s: exit %d\n got %q\nwant %q", ref, code, errs, want)
		}
	}

	// A hub id with an unreachable hub: one mention of the id, and gen-model.
	code, _, errs := run(t, "verify", "Org/Name")
	want := "streamguard verify: Org/Name: cannot reach the hub at http://127.0.0.1:9: " +
		`Get "http://127.0.0.1:9/api/models/Org/Name/revision/main?blobs=true": dial tcp 127.0.0.1:9: connect: connection refused` +
		" (set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1 to use only the cache in " + cache +
		"; without the hub, pass a model folder or write a synthetic one with `streamguard gen-model --out DIR`)\n"
	if code != 1 || errs != want {
		t.Errorf("unreachable hub: exit %d\n got %q\nwant %q", code, errs, want)
	}

	env.Offline = true
	code, _, errs = run(t, "verify", "Org/Name")
	want = "streamguard verify: Org/Name is not in the hub cache " + cache +
		" (Org/Name: revision \"main\": not in the cache) and offline mode (HF_HUB_OFFLINE) is on: run `streamguard pull Org/Name`" +
		" where the hub can be reached (or copy the cache), pass a model folder, or without the hub write a synthetic one with `streamguard gen-model --out DIR`\n"
	if code != 1 || errs != want {
		t.Errorf("offline: exit %d\n got %q\nwant %q", code, errs, want)
	}
}
