package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/streamguard/streamguard/internal/hub"
)

// modelFlagHelp is the help of a --model flag. Every command that takes a
// model resolves it with resolveModel, so each says the same: a folder or a
// hub id, spelled ORG/NAME[@REV] in usage lines.
const modelFlagHelp = "model folder, or hub id ORG/NAME[@REV] (from the Hugging Face cache; downloaded there on first use unless HF_HUB_OFFLINE=1)"

// hubEnv reads the hub settings; tests replace it.
var hubEnv = hub.EnvFromOS

// resolveModel turns what a user passed as a model into a local folder. A
// path that exists is used as is. Otherwise a hub id (ORG/NAME[@REV], such
// as Qwen/Qwen3Guard-Stream-0.6B) is looked up in the Hugging Face cache
// and, unless HF_HUB_OFFLINE is set, pulled when the cache lacks it.
// Every command that takes a model goes through here, so hub ids work
// everywhere at once. progress receives the download progress (may be
// io.Discard).
func resolveModel(ref string, progress io.Writer) (string, error) {
	if _, err := os.Stat(ref); err == nil {
		// A folder (or a file: the loader says what is wrong with it).
		return ref, nil
	}
	if hub.LooksLikePath(ref) || !hub.IsRepoID(ref) {
		return "", fmt.Errorf("no such folder: %s", ref)
	}
	r, err := hub.ParseRef(ref)
	if err != nil {
		return "", err
	}
	c := hub.NewClient(hubEnv())
	// The download bar only on a terminal; the commit line below always.
	s, err := c.Resolve(context.Background(), r, progressTo(progress, false))
	if err != nil {
		var he *hub.HTTPError
		if errors.As(err, &he) && he.Status == 404 {
			return "", fmt.Errorf("%s is not a folder, and the hub at %s does not have it: %w", ref, c.Endpoint, err)
		}
		if strings.HasPrefix(err.Error(), r.String()) {
			return "", err // the hub's errors already name the model
		}
		return "", fmt.Errorf("model %s: %w", ref, err)
	}
	if !s.FromCache {
		fmt.Fprintf(progress, "%s: commit %s in %s\n", r, s.Commit, s.Dir)
	}
	return s.Dir, nil
}
