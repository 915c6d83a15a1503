package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/streamguard/streamguard/internal/hub/hubtest"
)

const testRepo = "Org-1/Guard.Model_x"

// testWeights are random bytes standing for an LFS weight file.
var testWeights = sync.OnceValue(func() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]byte, 300_000)
	for i := range w {
		w[i] = byte(rng.Uint32())
	}
	return w
})

// testFiles is a model-like repository: small git files, an LFS weight
// file, a nested file.
func testFiles() map[string]hubtest.File {
	weights := testWeights()
	return map[string]hubtest.File{
		"config.json":       {Data: []byte(`{"model_type": "qwen3"}` + "\n")},
		"tokenizer.json":    {Data: []byte(`{"version": "1.0"}`)},
		"model.safetensors": {Data: weights, LFS: true},
		"sub/dir/notes.txt": {Data: []byte("nested file\n")},
		"empty.txt":         {Data: []byte{}},
		".gitattributes":    {Data: []byte("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")},
	}
}

func newTestClient(t *testing.T, h *hubtest.Server) *Client {
	dir := t.TempDir()
	c := NewClient(Env{Endpoint: h.URL(), CacheDir: filepath.Join(dir, "hub")})
	c.RetryWait = 0
	c.Parallel = 3
	return c
}

// checkSnapshot asserts the cache layout huggingface_hub expects: each
// snapshot entry a relative symlink to blobs/ETAG holding the bytes.
func checkSnapshot(t *testing.T, c *Client, s *Snapshot, files map[string]hubtest.File) {
	t.Helper()
	wantDir := filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "snapshots", s.Commit)
	if s.Dir != wantDir {
		t.Fatalf("snapshot dir %s, want %s", s.Dir, wantDir)
	}
	for name, f := range files {
		p := filepath.Join(s.Dir, filepath.FromSlash(name))
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("%s: not a symlink: %v", name, err)
		}
		depth := strings.Count(name, "/")
		want := strings.Repeat("../", depth+2) + "blobs/" + f.ETag()
		if target != filepath.FromSlash(want) {
			t.Errorf("%s -> %s, want %s", name, target, want)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s: content differs (%v)", name, err)
		}
	}
}

func TestPullLayoutAndSecondPullIsCached(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	repo := h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	var bar bytes.Buffer
	s, err := c.Pull(context.Background(), ref, PullOptions{Progress: &bar})
	if err != nil {
		t.Fatal(err)
	}
	if s.Commit != repo.Commit || s.FromCache {
		t.Fatalf("commit %s fromCache %v, want %s", s.Commit, s.FromCache, repo.Commit)
	}
	checkSnapshot(t, c, s, files)
	ref1, err := os.ReadFile(filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "refs", "main"))
	if err != nil || string(ref1) != repo.Commit {
		t.Errorf("refs/main = %q (%v), want the commit with no newline", ref1, err)
	}
	if len(s.Files) != len(files) {
		t.Fatalf("%d results, want %d", len(s.Files), len(files))
	}
	for _, r := range s.Files {
		want := VerifiedGitSHA1
		if files[r.Name].LFS {
			want = VerifiedSHA256
		}
		if r.Status != StatusDownloaded || r.Verified != want || r.Fetched != int64(len(files[r.Name].Data)) || r.Blob != files[r.Name].ETag() {
			t.Errorf("%s: %+v, want downloaded, %s, %d bytes", r.Name, r, want, len(files[r.Name].Data))
		}
	}
	if !strings.Contains(bar.String(), "6/6 files") || !strings.Contains(bar.String(), "100%") {
		t.Errorf("progress output %q lacks the final state", bar.String())
	}
	// The LFS file came from the CDN, without the token; the API was asked
	// for the per-file metadata.
	reqs := h.TakeRequests()
	var sawAPI, sawCDN bool
	for _, r := range reqs {
		if r.Server == "hub" && strings.HasPrefix(r.Path, "/api/models/"+testRepo+"/revision/main") {
			sawAPI = true
		}
		if r.Server == "cdn" && r.Method == "GET" {
			sawCDN = true
		}
	}
	if !sawAPI || !sawCDN {
		t.Errorf("requests %v: want the model API and a CDN GET", reqs)
	}

	s2, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s2.Files {
		if r.Status != StatusCached || r.Fetched != 0 {
			t.Errorf("second pull %s: %+v, want cached", r.Name, r)
		}
	}
	for _, r := range h.TakeRequests() {
		if r.Method == "GET" && !strings.HasPrefix(r.Path, "/api/") {
			t.Errorf("second pull downloaded %s %s", r.Server, r.Path)
		}
	}
}

func TestPullResumesInterruptedTransfer(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	const cut = 100_000
	h.CutAfter("model.safetensors", cut)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
	var ranges []string
	for _, r := range h.TakeRequests() {
		if r.Server == "cdn" {
			ranges = append(ranges, r.Range)
		}
	}
	// First GET whole, the retry continues where the bytes stopped.
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes="+strconv.Itoa(cut)+"-" {
		t.Fatalf("CDN ranges %q, want [\"\" \"bytes=%d-\"]", ranges, cut)
	}
	for _, r := range s.Files {
		if r.Name == "model.safetensors" && (r.Status != StatusResumed || r.ResumedFrom != cut || r.Fetched != 300_000) {
			t.Errorf("%+v: want resumed from %d, 300000 bytes fetched in all", r, cut)
		}
	}
}

func TestPullResumesPartialFileFromEarlierRun(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	w := files["model.safetensors"]
	blobs := filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "blobs")
	os.MkdirAll(blobs, 0o755)
	const have = 123_456
	if err := os.WriteFile(filepath.Join(blobs, w.ETag()+".incomplete"), w.Data[:have], 0o644); err != nil {
		t.Fatal(err)
	}
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
	for _, r := range h.TakeRequests() {
		if r.Server == "cdn" && r.Range != "bytes=123456-" {
			t.Errorf("CDN request with Range %q, want bytes=123456-", r.Range)
		}
	}
	for _, r := range s.Files {
		if r.Name == "model.safetensors" && (r.Status != StatusResumed || r.ResumedFrom != have || r.Fetched != int64(len(w.Data)-have)) {
			t.Errorf("%+v: want resumed from %d with %d fetched", r, have, len(w.Data)-have)
		}
	}
	if _, err := os.Stat(filepath.Join(blobs, w.ETag()+".incomplete")); !os.IsNotExist(err) {
		t.Errorf("the .incomplete file is still there: %v", err)
	}
}

func TestPullServerIgnoringRangeRestarts(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	h.IgnoreRange(true)
	c := newTestClient(t, h)
	w := files["model.safetensors"]
	blobs := filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "blobs")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, w.ETag()+".incomplete"), w.Data[:5000], 0o644)
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
}

func TestPullCorruptDownloadIsFetchedAgain(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	h.Corrupt("model.safetensors", 1)
	h.Corrupt("config.json", 1)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
	for _, r := range s.Files {
		want := StatusDownloaded
		if r.Name == "model.safetensors" || r.Name == "config.json" {
			want = StatusRefetched
		}
		if r.Status != want {
			t.Errorf("%s: status %s, want %s", r.Name, r.Status, want)
		}
	}
}

func TestPullCorruptCachedBlobIsFetchedAgain(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	if _, err := c.Pull(context.Background(), ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "blobs", files["model.safetensors"].ETag())
	b, _ := os.ReadFile(blob)
	b[777] ^= 1 // same size, one bit wrong
	os.WriteFile(blob, b, 0o644)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
	for _, r := range s.Files {
		want := StatusCached
		if r.Name == "model.safetensors" {
			want = StatusRefetched
		}
		if r.Status != want {
			t.Errorf("%s: status %s, want %s", r.Name, r.Status, want)
		}
	}
}

func TestPullAlwaysCorruptFails(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	h.Corrupt("model.safetensors", 100)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	_, err := c.Pull(context.Background(), ref, PullOptions{})
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "sha256 is ") || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("err = %v, want a sha256 mismatch naming the file", err)
	}
	// Nothing half-made is left for a later run to trust.
	if _, err := os.Stat(filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "snapshots")); !os.IsNotExist(err) {
		t.Errorf("snapshot folder exists after a failed pull: %v", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "blobs"))
	for _, b := range blobs {
		if strings.HasPrefix(b.Name(), files["model.safetensors"].ETag()) {
			t.Errorf("blob %s left behind", b.Name())
		}
	}
}

func TestOfflineServedFromCache(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	repo := h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.TakeRequests()
	c.Offline = true
	for _, r := range []string{testRepo, testRepo + "@" + repo.Commit} {
		ref, _ := ParseRef(r)
		for _, get := range []func() (*Snapshot, error){
			func() (*Snapshot, error) { return c.Resolve(context.Background(), ref, nil) },
			func() (*Snapshot, error) { return c.Pull(context.Background(), ref, PullOptions{}) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s offline: %v", r, err)
			}
			if got.Dir != s.Dir || !got.FromCache || got.Commit != repo.Commit {
				t.Errorf("%s offline: %+v, want %s from the cache", r, got, s.Dir)
			}
		}
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("offline mode sent %d requests: %v", len(reqs), reqs)
	}
	// Not cached: a clear refusal, still without the network.
	other, _ := ParseRef("Qwen/Qwen3Guard-Stream-0.6B@v2")
	_, err = c.Resolve(context.Background(), other, nil)
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") || !strings.Contains(err.Error(), "streamguard pull Qwen/Qwen3Guard-Stream-0.6B@v2") {
		t.Errorf("err = %v", err)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("offline mode sent requests: %v", reqs)
	}
}

func TestResolveUsesCacheThenPullsWhatIsMissing(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	s, err := c.Resolve(context.Background(), ref, nil)
	if err != nil || s.FromCache {
		t.Fatalf("first resolve: %+v %v, want a pull", s, err)
	}
	h.TakeRequests()
	s, err = c.Resolve(context.Background(), ref, nil)
	if err != nil || !s.FromCache {
		t.Fatalf("second resolve: %+v %v, want the cache", s, err)
	}
	if reqs := h.TakeRequests(); len(reqs) != 0 {
		t.Errorf("a complete cached snapshot still sent %v", reqs)
	}
	// A snapshot missing its weights (a partial download by another tool)
	// is completed.
	os.Remove(filepath.Join(s.Dir, "model.safetensors"))
	s, err = c.Resolve(context.Background(), ref, nil)
	if err != nil || s.FromCache {
		t.Fatalf("resolve of a partial snapshot: %+v %v, want a pull", s, err)
	}
	checkSnapshot(t, c, s, files)
}

func TestAuthTokenSentToHubOnly(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo(testRepo, files)
	h.RequireToken("hf_secret")
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo)
	_, err := c.Pull(context.Background(), ref, PullOptions{})
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 401 || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("without a token: %v, want a 401 that mentions HF_TOKEN", err)
	}
	h.TakeRequests()
	c.Token = "hf_secret"
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, c, s, files)
	var hub, cdn int
	for _, r := range h.TakeRequests() {
		switch r.Server {
		case "hub":
			hub++
			if r.Auth != "Bearer hf_secret" {
				t.Errorf("hub %s %s without the token", r.Method, r.Path)
			}
		case "cdn":
			cdn++
			if r.Auth != "" {
				t.Errorf("the token went to the CDN: %s", r.Path)
			}
		}
	}
	if hub == 0 || cdn == 0 {
		t.Errorf("hub %d, cdn %d requests", hub, cdn)
	}
}

func TestRenamedRepositoryRedirectIsFollowed(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	h.AddRepo("NewOrg/model", files)
	h.Rename("OldOrg/model", "NewOrg/model")
	c := newTestClient(t, h)
	ref, _ := ParseRef("OldOrg/model")
	s, err := c.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Stored under the name asked for, as huggingface_hub does.
	if !strings.Contains(s.Dir, "models--OldOrg--model") {
		t.Errorf("dir %s", s.Dir)
	}
	var relative int
	for _, r := range h.TakeRequests() {
		if r.Method == "HEAD" && strings.HasPrefix(r.Path, "/NewOrg/model/resolve/") {
			relative++
		}
	}
	if relative != len(files) {
		t.Errorf("%d HEADs followed the relative redirect, want %d", relative, len(files))
	}
}

func TestPullPinnedCommitIncludeAndErrors(t *testing.T) {
	h := hubtest.New(t)
	files := testFiles()
	repo := h.AddRepo(testRepo, files)
	c := newTestClient(t, h)
	ref, _ := ParseRef(testRepo + "@" + repo.Commit)
	s, err := c.Pull(context.Background(), ref, PullOptions{Include: []string{"*.json"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 2 || s.Files[0].Name != "config.json" || s.Files[1].Name != "tokenizer.json" {
		t.Errorf("include *.json: %+v", s.Files)
	}
	if _, err := os.Stat(filepath.Join(c.CacheDir, "models--Org-1--Guard.Model_x", "refs")); !os.IsNotExist(err) {
		t.Errorf("a commit pin wrote refs/: %v", err)
	}
	for _, tc := range []struct{ ref, want string }{
		{"Nobody/nothing", "RepoNotFound"},
		{testRepo + "@v9", "RevisionNotFound"},
	} {
		ref, _ := ParseRef(tc.ref)
		if _, err := c.Pull(context.Background(), ref, PullOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s", tc.ref, err, tc.want)
		}
	}
	ref, _ = ParseRef(testRepo)
	if _, err := c.Pull(context.Background(), ref, PullOptions{Include: []string{"*.bin"}}); err == nil || !strings.Contains(err.Error(), "no file") {
		t.Errorf("include matching nothing: %v", err)
	}
	// An unreachable hub: the message says how to work offline.
	c.Endpoint = "http://127.0.0.1:1"
	if _, err := c.Pull(context.Background(), ref, PullOptions{}); err == nil || !strings.Contains(err.Error(), "HF_HUB_OFFLINE=1") {
		t.Errorf("unreachable hub: %v", err)
	}
}

// TestPullPinnedCommitMustBeAnswered: the user pins @X (a full commit
// hash) and the hub answers commit Y. The pull is refused before any file
// is asked for, and nothing is recorded: no snapshots/Y, no refs/X (which
// held Y, so that the pin neither held nor failed). A ref file is never
// named after a commit hash.
func TestPullPinnedCommitMustBeAnswered(t *testing.T) {
	pinned, served := strings.Repeat("1", 40), strings.Repeat("2", 40)
	body := []byte(`{"model_type":"qwen3"}`)
	var fileRequests atomic.Int64
	hubSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/models/"):
			fmt.Fprintf(w, `{"id":"o/m","sha":%q,"siblings":[{"rfilename":"config.json","size":%d}]}`, served, len(body))
		case strings.Contains(r.URL.Path, "/resolve/"):
			fileRequests.Add(1)
			w.Header().Set("X-Repo-Commit", served)
			w.Header().Set("ETag", `"`+hubtest.File{Data: body}.ETag()+`"`)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			if r.Method == http.MethodGet {
				w.Write(body)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer hubSrv.Close()
	c := NewClient(Env{Endpoint: hubSrv.URL, CacheDir: t.TempDir()})
	c.RetryWait = 0
	s, err := c.Pull(context.Background(), Ref{Repo: "o/m", Revision: pinned}, PullOptions{})
	want := "o/m@" + pinned + ": the hub answered commit " + served + " for the pinned commit " + pinned
	if err == nil || err.Error() != want {
		t.Fatalf("pull = %+v, %v; want the error %s", s, err, want)
	}
	if n := fileRequests.Load(); n != 0 {
		t.Errorf("%d file requests after the wrong commit, want 0", n)
	}
	for _, sub := range []string{"refs", "snapshots", "blobs"} {
		if _, err := os.Stat(filepath.Join(c.CacheDir, "models--o--m", sub)); !os.IsNotExist(err) {
			t.Errorf("%s/ exists after a refused pin: %v", sub, err)
		}
	}
	// Whoever calls it, writeRef never makes refs/COMMIT.
	if err := c.Cache().writeRef("o/m", pinned, served); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Cache().refPath("o/m", pinned)); !os.IsNotExist(err) {
		t.Errorf("writeRef made refs/%s: %v", pinned, err)
	}
}

// TestIndexBoundedBeforeRead: a snapshot's shard index over the bound
// (a sparse file costs no disk) is refused from its size, not read first.
func TestIndexBoundedBeforeRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = checkModelFolder(dir)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("a 1 GiB index: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("refusing a 1 GiB index allocated %d bytes", n)
	}
}
