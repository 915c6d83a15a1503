// Package hubtest is a fake Hugging Face hub for tests: the model API,
// resolve routes with the hub's headers, a separate CDN host for LFS files,
// Range requests, error headers, and injected faults.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Server serves the routes and headers of a Hugging Face hub that
// huggingface_hub relies on: the model API, HEAD/GET on resolve/REV/FILE
// (small files served directly with their git sha1 ETag; LFS files as a
// 302 to a separate CDN host with X-Linked-Etag/X-Linked-Size), Range
// requests, hub error headers. Faults are injected per file.
type Server struct {
	t   testing.TB
	Hub *httptest.Server
	CDN *httptest.Server

	mu       sync.Mutex
	repos    map[string]*Repo
	renamed  map[string]string // old id -> new id
	token    string            // required when set
	requests []Request

	cutAfter    map[string]int64 // file: bytes sent before the connection drops (once)
	corrupt     map[string]int   // file: times the CDN serves a flipped byte
	ignoreRange bool
}

// Repo is a served repository; Commit is what its branch main points to.
type Repo struct {
	Commit   string
	branches map[string]string
	files    map[string]File
	sums     map[string]sums // computed once: large files are hashed slowly
}

type sums struct{ sha256, gitSHA1 string }

// File is one file of a repository; LFS files are served through the CDN.
type File struct {
	Data []byte
	LFS  bool
}

// Request is one request a server received: Server is "hub" or "cdn".
type Request struct {
	Server, Method, Path, Range, Auth string
}

// GitBlobSHA1 is git's id of a blob: the hub's ETag of a small file.
func GitBlobSHA1(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256Hex is the hex sha256: the hub's ETag of an LFS file.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ETag is the blob id the hub gives a file.
func (f File) ETag() string {
	if f.LFS {
		return SHA256Hex(f.Data)
	}
	return GitBlobSHA1(f.Data)
}

// New starts a hub and a CDN, closed when the test ends.
func New(t testing.TB) *Server {
	h := &Server{t: t, repos: map[string]*Repo{}, renamed: map[string]string{},
		cutAfter: map[string]int64{}, corrupt: map[string]int{}}
	h.Hub = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.CDN = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	t.Cleanup(func() { h.Hub.Close(); h.CDN.Close() })
	return h
}

// AddRepo serves a repository whose branch main points to one commit.
func (h *Server) AddRepo(id string, files map[string]File) *Repo {
	commit := GitBlobSHA1([]byte(id))
	r := &Repo{Commit: commit, branches: map[string]string{"main": commit}, files: files, sums: map[string]sums{}}
	for name, f := range files {
		r.sums[name] = sums{SHA256Hex(f.Data), GitBlobSHA1(f.Data)}
	}
	h.mu.Lock()
	h.repos[id] = r
	h.mu.Unlock()
	return r
}

func (h *Server) record(server string, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = append(h.requests, Request{server, r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("Authorization")})
}

// TakeRequests returns the requests received since the last call.
func (h *Server) TakeRequests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.requests
	h.requests = nil
	return r
}

// RequireToken makes the hub answer 401 to requests without this token.
func (h *Server) RequireToken(token string) { h.mu.Lock(); h.token = token; h.mu.Unlock() }

// Rename makes requests for old answer with a relative redirect to new.
func (h *Server) Rename(old, new string) { h.mu.Lock(); h.renamed[old] = new; h.mu.Unlock() }

// CutAfter makes the next transfer of file drop the connection after n
// bytes of body.
func (h *Server) CutAfter(file string, n int64) { h.mu.Lock(); h.cutAfter[file] = n; h.mu.Unlock() }

// Corrupt makes the next n transfers of file carry one flipped bit.
func (h *Server) Corrupt(file string, n int) { h.mu.Lock(); h.corrupt[file] = n; h.mu.Unlock() }

// IgnoreRange makes the server answer Range requests with the whole file.
func (h *Server) IgnoreRange(on bool) { h.mu.Lock(); h.ignoreRange = on; h.mu.Unlock() }

// URL is the hub's address, for HF_ENDPOINT.
func (h *Server) URL() string { return h.Hub.URL }

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (h *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	h.record("hub", r)
	if h.token != "" && r.Header.Get("Authorization") != "Bearer "+h.token {
		hubError(w, http.StatusUnauthorized, "RepoNotFound", "Invalid credentials in Authorization header")
		return
	}
	path := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(path, "/api/models/"); ok {
		h.serveAPI(w, r, rest)
		return
	}
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 5)
	if len(parts) < 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	id := parts[0] + "/" + parts[1]
	h.mu.Lock()
	newID, moved := h.renamed[id]
	repo := h.repos[id]
	h.mu.Unlock()
	if moved {
		// A renamed repository: a relative redirect, as the hub sends.
		w.Header().Set("Location", "/"+newID+"/resolve/"+parts[3]+"/"+parts[4])
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if repo == nil {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		return
	}
	rev, _ := urlUnescape(parts[3])
	commit, ok := repo.resolve(rev)
	if !ok {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	name, _ := urlUnescape(parts[4])
	f, ok := repo.files[name]
	w.Header().Set("X-Repo-Commit", commit)
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	if f.LFS {
		sum := repo.sums[name].sha256
		pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sum, len(f.Data))
		w.Header().Set("ETag", `"`+GitBlobSHA1([]byte(pointer))+`"`)
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		w.Header().Set("Location", h.CDN.URL+"/repos/"+sum+"?name="+name)
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+repo.sums[name].gitSHA1+`"`)
	h.serveBytes(w, r, name, f.Data)
}

func (h *Server) serveAPI(w http.ResponseWriter, r *http.Request, rest string) {
	if i := strings.Index(rest, "/tree/"); i >= 0 {
		h.serveTree(w, r, rest[:i], rest[i+len("/tree/"):])
		return
	}
	i := strings.Index(rest, "/revision/")
	if i < 0 {
		http.NotFound(w, r)
		return
	}
	id := rest[:i]
	rev, _ := urlUnescape(rest[i+len("/revision/"):])
	h.mu.Lock()
	newID, moved := h.renamed[id]
	repo := h.repos[id]
	h.mu.Unlock()
	if moved {
		w.Header().Set("Location", "/api/models/"+newID+"/revision/"+rest[i+len("/revision/"):]+"?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if repo == nil {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		return
	}
	commit, ok := repo.resolve(rev)
	if !ok {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	type lfs struct {
		SHA256      string `json:"sha256"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type sibling struct {
		RFilename string `json:"rfilename"`
		Size      *int   `json:"size,omitempty"`
		BlobID    string `json:"blobId,omitempty"`
		LFS       *lfs   `json:"lfs,omitempty"`
	}
	out := struct {
		ID       string    `json:"id"`
		SHA      string    `json:"sha"`
		Siblings []sibling `json:"siblings"`
	}{ID: id, SHA: commit}
	for name, f := range repo.files {
		s := sibling{RFilename: name}
		if r.URL.Query().Get("blobs") == "true" {
			n := len(f.Data)
			s.Size, s.BlobID = &n, repo.sums[name].gitSHA1
			if f.LFS {
				s.LFS = &lfs{SHA256: repo.sums[name].sha256, Size: len(f.Data), PointerSize: 134}
			}
		}
		out.Siblings = append(out.Siblings, s)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// serveTree answers the tree listing newer huggingface_hub versions use
// for the file list: GET /api/models/ORG/NAME/tree/REV?recursive=true, one
// page with every file (and the folders of nested ones).
func (h *Server) serveTree(w http.ResponseWriter, r *http.Request, id, rawRev string) {
	h.mu.Lock()
	repo := h.repos[id]
	h.mu.Unlock()
	if repo == nil {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		return
	}
	rev, _ := urlUnescape(rawRev)
	if _, ok := repo.resolve(rev); !ok {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	type lfs struct {
		OID         string `json:"oid"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type entry struct {
		Type string `json:"type"`
		OID  string `json:"oid"`
		Size int    `json:"size"`
		Path string `json:"path"`
		LFS  *lfs   `json:"lfs,omitempty"`
	}
	var out []entry
	dirs := map[string]bool{}
	for name, f := range repo.files {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				out = append(out, entry{Type: "directory", OID: GitBlobSHA1([]byte(d)), Path: d})
			}
		}
		e := entry{Type: "file", OID: repo.sums[name].gitSHA1, Size: len(f.Data), Path: name}
		if f.LFS {
			e.LFS = &lfs{OID: repo.sums[name].sha256, Size: len(f.Data), PointerSize: 134}
		}
		out = append(out, e)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (r *Repo) resolve(rev string) (string, bool) {
	if rev == r.Commit {
		return rev, true
	}
	c, ok := r.branches[rev]
	return c, ok
}

func (h *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	h.record("cdn", r)
	sum := strings.TrimPrefix(r.URL.Path, "/repos/")
	name := r.URL.Query().Get("name")
	h.mu.Lock()
	var data []byte
	for _, repo := range h.repos {
		if f, ok := repo.files[name]; ok && f.LFS && repo.sums[name].sha256 == sum {
			data = f.Data
		}
	}
	h.mu.Unlock()
	if data == nil {
		http.NotFound(w, r)
		return
	}
	h.serveBytes(w, r, name, data)
}

// serveBytes answers GET/HEAD with Range support and the injected faults.
func (h *Server) serveBytes(w http.ResponseWriter, r *http.Request, name string, data []byte) {
	h.mu.Lock()
	cut, cutting := h.cutAfter[name]
	if cutting {
		delete(h.cutAfter, name)
	}
	Corrupt := h.corrupt[name] > 0 && r.Method == http.MethodGet
	if Corrupt {
		h.corrupt[name]--
	}
	IgnoreRange := h.ignoreRange
	h.mu.Unlock()
	if Corrupt {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0x40
	}
	start := 0
	if rg := r.Header.Get("Range"); rg != "" && !IgnoreRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(data)-1, len(data)))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)-start))
	w.Header().Set("Accept-Ranges", "bytes")
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if r.Method == http.MethodHead {
		return
	}
	body := data[start:]
	if cutting && int(cut) < len(body) {
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	w.Write(body)
}

func urlUnescape(s string) (string, error) {
	u, err := http.NewRequest(http.MethodGet, "http://x/"+s, nil)
	if err != nil {
		return s, err
	}
	return strings.TrimPrefix(u.URL.Path, "/"), nil
}
