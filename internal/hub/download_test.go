package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// countingTransport counts the response body bytes the client reads of
// the GETs of files (not the model API).
type countingTransport struct {
	base http.RoundTripper
	n    *atomic.Int64
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
		resp.Body = countingBody{resp.Body, t.n}
	}
	return resp, err
}

// floodCDN serves 64 MiB for any file, announcing them in Content-Length
// or not (chunked).
func floodCDN(t *testing.T, announce bool) *httptest.Server {
	const flood = 64 << 20
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if announce {
			w.Header().Set("Content-Length", fmt.Sprint(flood))
		}
		chunk := make([]byte, 1<<20)
		for range flood / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if !announce {
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(cdn.Close)
	return cdn
}

// TestDownloadStopsAtAnnouncedSize: the hub says the file has 16 bytes
// (model API size, X-Linked-Size, sha256 ETag); the CDN sends 64 MiB. The
// download fails at once, with an error naming the file and the sizes, and
// without reading (or writing to disk) more than the 16 bytes and one: a
// hostile CDN or mirror cannot fill the disk.
func TestDownloadStopsAtAnnouncedSize(t *testing.T) {
	good := []byte("0123456789abcdef")
	sum := sha256.Sum256(good)
	etag := hex.EncodeToString(sum[:])
	commit := strings.Repeat("a", 40)
	for _, tc := range []struct {
		name     string
		announce bool
		read     int64
		err      string
	}{
		// Content-Length already says too much: nothing is read.
		{"content-length", true, 0, "model.safetensors: CDN/blob: response announces 67108864 bytes from byte 0, more than the 16 bytes announced for the file"},
		// No Content-Length: the 16 bytes, then one more that should not be.
		{"chunked", false, 17, "model.safetensors: CDN/blob: response goes on past byte 16, more than the 16 bytes announced for the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cdn := floodCDN(t, tc.announce)
			hubSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasPrefix(r.URL.Path, "/api/models/"):
					fmt.Fprintf(w, `{"id":"o/m","sha":%q,"siblings":[{"rfilename":"model.safetensors","size":16,"lfs":{"sha256":%q,"size":16}}]}`, commit, etag)
				case strings.Contains(r.URL.Path, "/resolve/"):
					w.Header().Set("X-Repo-Commit", commit)
					w.Header().Set("X-Linked-Etag", `"`+etag+`"`)
					w.Header().Set("X-Linked-Size", "16")
					w.Header().Set("Location", cdn.URL+"/blob")
					w.WriteHeader(http.StatusFound)
				default:
					http.NotFound(w, r)
				}
			}))
			defer hubSrv.Close()
			var n atomic.Int64
			c := NewClient(Env{Endpoint: hubSrv.URL, CacheDir: t.TempDir()})
			c.HTTP = &http.Client{Transport: countingTransport{http.DefaultTransport, &n}}
			c.RetryWait = 0 // with the default retries: the failure is not retried
			_, err := c.Pull(context.Background(), Ref{Repo: "o/m", Revision: "main"}, PullOptions{})
			if err == nil {
				t.Fatal("pull succeeded")
			}
			if got := strings.ReplaceAll(err.Error(), cdn.URL, "CDN"); got != tc.err {
				t.Errorf("error\n%s\nwant\n%s", got, tc.err)
			}
			if got := n.Load(); got != tc.read {
				t.Errorf("read %d bytes of the CDN's answers, want %d", got, tc.read)
			}
			// Nothing of the bad answer is kept.
			inc := filepath.Join(c.CacheDir, "models--o--m", "blobs", etag+".incomplete")
			if st, err := os.Stat(inc); err != nil || st.Size() != 0 {
				t.Errorf("%s: %v, want an empty file", inc, err)
			}
		})
	}
}

// TestDownloadOfUnknownSizeIsBounded: a file whose size nobody announced
// is read up to maxFileSize bytes and one, not for ever.
func TestDownloadOfUnknownSizeIsBounded(t *testing.T) {
	defer func(m int64) { maxFileSize = m }(maxFileSize)
	maxFileSize = 1000
	cdn := floodCDN(t, false)
	var n atomic.Int64
	c := NewClient(Env{Endpoint: "http://hub.invalid", CacheDir: t.TempDir()})
	c.HTTP = &http.Client{Transport: countingTransport{http.DefaultTransport, &n}}
	inc := filepath.Join(t.TempDir(), "blob.incomplete")
	meta := fileMeta{Commit: strings.Repeat("a", 40), ETag: "x", Size: -1, Location: cdn.URL + "/blob"}
	_, fetched, err := c.fetch(context.Background(), meta, inc, NewProgress(nil, -1, 1).file())
	want := cdn.URL + "/blob: response goes on past byte 1000, more than the 1000 bytes a file of unknown size may have"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
	if fetched != 1000 || n.Load() != 1001 {
		t.Errorf("fetched %d, read %d bytes, want 1000 and 1001", fetched, n.Load())
	}
	if retryable(context.Background(), err) {
		t.Errorf("an answer longer than the file is retried")
	}
}
