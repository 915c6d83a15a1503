package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"sync"
)

// PullOptions select what a pull fetches and where it reports.
type PullOptions struct {
	// Include, when not empty, keeps only the files whose name matches
	// one of these path.Match patterns ("*.json", "model-*.safetensors").
	Include []string
	// Progress receives the progress bar (nil: none).
	Progress io.Writer
}

// Snapshot is a repository revision in the cache.
type Snapshot struct {
	Ref    Ref    `json:"ref"`
	Commit string `json:"commit"`
	// Dir is snapshots/COMMIT: a model folder.
	Dir string `json:"dir"`
	// FromCache is true when the snapshot was served from the cache
	// without asking the hub (offline mode).
	FromCache bool         `json:"from_cache"`
	Files     []FileResult `json:"files,omitempty"`
}

// FileResult is what a pull did for one file.
type FileResult struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	Blob string `json:"blob"`
	// Status is StatusCached, StatusDownloaded, StatusResumed or
	// StatusRefetched.
	Status string `json:"status"`
	// Verified is how the blob was checked: VerifiedSHA256,
	// VerifiedGitSHA1 or VerifiedSize.
	Verified string `json:"verified"`
	// ResumedFrom is the bytes already on disk when a resumed transfer
	// began; Fetched the bytes that came over the network.
	ResumedFrom int64 `json:"resumed_from,omitempty"`
	Fetched     int64 `json:"fetched"`
}

// Pull downloads ref's files into the cache: it resolves the revision to
// a commit, records it in refs/, fetches every file not already there
// (verified, resumable, several at once), and links them into
// snapshots/COMMIT once all are in. In offline mode it returns the cached
// snapshot or ErrOffline.
func (c *Client) Pull(ctx context.Context, ref Ref, opts PullOptions) (*Snapshot, error) {
	if c.Offline {
		return c.cachedSnapshot(ref)
	}
	info, err := c.RepoInfo(ctx, ref)
	if err != nil {
		return nil, c.reachError(ref, err)
	}
	// A full commit hash never moves: a hub that answers another commit
	// (a broken mirror, or one serving other files) is refused, or the pin
	// would hold nothing.
	if isCommit(ref.Revision) && info.Commit != ref.Revision {
		return nil, fmt.Errorf("%s: the hub answered commit %s for the pinned commit %s", ref, info.Commit, ref.Revision)
	}
	cache := c.Cache()
	if err := cache.writeRef(ref.Repo, ref.Revision, info.Commit); err != nil {
		return nil, err
	}
	files, err := selectFiles(info.Files, opts.Include)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, f := range files {
		if f.Size < 0 {
			total = -1
			break
		}
		total += f.Size
	}
	prog := NewProgress(opts.Progress, total, len(files))
	results, err := c.fetchAll(ctx, ref.Repo, info.Commit, files, prog)
	prog.Finish()
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		if err := cache.link(ref.Repo, info.Commit, r.Name, r.Blob); err != nil {
			return nil, err
		}
	}
	return &Snapshot{Ref: ref, Commit: info.Commit, Dir: cache.SnapshotDir(ref.Repo, info.Commit), Files: results}, nil
}

// selectFiles keeps the files matching include (all when empty).
func selectFiles(all []RepoFile, include []string) ([]RepoFile, error) {
	for _, p := range include {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("include pattern %q: %w", p, err)
		}
	}
	if len(include) == 0 {
		return all, nil
	}
	var out []RepoFile
	for _, f := range all {
		for _, p := range include {
			if ok, _ := path.Match(p, f.Name); ok {
				out = append(out, f)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no file of the repository matches %q", include)
	}
	return out, nil
}

// fetchAll brings every file's blob into the cache, c.Parallel at a time.
// The first failure cancels the others.
func (c *Client) fetchAll(ctx context.Context, repo, commit string, files []RepoFile, prog *Progress) ([]FileResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]FileResult, len(files))
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		blobMu   sync.Mutex
		blobLock = map[string]*sync.Mutex{} // one writer per blob in this process
	)
	sem := make(chan struct{}, max(c.Parallel, 1))
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			r, err := c.fetchFile(ctx, repo, commit, f, prog, func(etag string) *sync.Mutex {
				blobMu.Lock()
				defer blobMu.Unlock()
				if blobLock[etag] == nil {
					blobLock[etag] = &sync.Mutex{}
				}
				return blobLock[etag]
			})
			if err != nil {
				once.Do(func() { firstErr = fmt.Errorf("%s: %w", f.Name, err); cancel() })
				return
			}
			results[i] = r
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Name < results[j].Name })
	return results, nil
}

// fetchFile reads one file's metadata and makes its blob present.
func (c *Client) fetchFile(ctx context.Context, repo, commit string, f RepoFile, prog *Progress, lockFor func(string) *sync.Mutex) (FileResult, error) {
	var meta fileMeta
	var err error
	for attempt := 0; ; attempt++ {
		meta, err = c.fileMetadata(ctx, repo, commit, f.Name)
		if err == nil || !retryable(ctx, err) || attempt >= c.Retries {
			break
		}
		if err := sleep(ctx, c.RetryWait<<min(attempt, 4)); err != nil {
			return FileResult{}, err
		}
	}
	if err != nil {
		return FileResult{}, err
	}
	if meta.Commit != commit {
		return FileResult{}, fmt.Errorf("hub answered for commit %s, asked for %s", meta.Commit, commit)
	}
	if f.SHA256 != "" && meta.ETag != f.SHA256 {
		return FileResult{}, fmt.Errorf("ETag %s differs from the LFS sha256 %s the model API listed", meta.ETag, f.SHA256)
	}
	if meta.Size < 0 {
		meta.Size = f.Size
	} else if f.Size >= 0 && meta.Size != f.Size {
		return FileResult{}, fmt.Errorf("size %d differs from the %d bytes the model API listed", meta.Size, f.Size)
	}
	mu := lockFor(meta.ETag)
	mu.Lock()
	defer mu.Unlock()
	fp := prog.file()
	r, err := c.ensureBlob(ctx, repo, meta, fp)
	if err != nil {
		return FileResult{}, err
	}
	fp.fileDone()
	return FileResult{Name: f.Name, Size: meta.Size, Blob: meta.ETag, Status: r.status, Verified: r.verified,
		ResumedFrom: r.resumedFrom, Fetched: r.fetched}, nil
}

// reachError explains a failure to reach the hub.
func (c *Client) reachError(ref Ref, err error) error {
	var he *HTTPError
	if errors.As(err, &he) {
		return fmt.Errorf("%s: %w", ref, err)
	}
	return fmt.Errorf("%s: cannot reach the hub at %s: %w (set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1 to use only the cache in %s; without the hub, pass a model folder or write a synthetic one with `streamguard gen-model --out DIR`)",
		ref, c.Endpoint, err, c.CacheDir)
}
