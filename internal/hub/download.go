package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/streamguard/streamguard/internal/folio"
)

// Blob outcomes, as FileResult.Status reports them.
const (
	StatusCached     = "cached"     // already in the cache and verified
	StatusDownloaded = "downloaded" // fetched whole
	StatusResumed    = "resumed"    // an interrupted download was continued
	StatusRefetched  = "refetched"  // a corrupt copy was found and fetched again
)

// blobResult is what ensureBlob did.
type blobResult struct {
	status      string
	verified    string
	resumedFrom int64 // bytes already on disk when the transfer (re)started
	fetched     int64 // bytes that came over the network
}

// ensureBlob makes the cache hold a verified blob for meta: it checks a
// blob already there, resumes a partial download, and fetches again a
// corrupt one.
func (c *Client) ensureBlob(ctx context.Context, repo string, meta fileMeta, fp *fileProgress) (blobResult, error) {
	cache := c.Cache()
	unlock, err := lockFile(cache.lockPath(repo, meta.ETag))
	if err != nil {
		return blobResult{}, err
	}
	defer unlock()
	blob := cache.blobPath(repo, meta.ETag)
	var res blobResult
	if _, err := os.Stat(blob); err == nil {
		how, verr := verifyBlob(blob, meta.ETag, meta.Size)
		if verr == nil {
			fp.set(meta.Size)
			return blobResult{status: StatusCached, verified: how}, nil
		}
		var ce *CorruptError
		if !errors.As(verr, &ce) {
			return res, verr
		}
		if err := os.Remove(blob); err != nil {
			return res, err
		}
		res.status = StatusRefetched
	}
	if err := os.MkdirAll(cache.blobPath(repo, ""), 0o755); err != nil {
		return res, err
	}
	inc := blob + ".incomplete"
	corruptTries := 0
	for attempt := 0; ; attempt++ {
		start, fetched, err := c.fetch(ctx, meta, inc, fp)
		res.fetched += fetched
		if start > 0 && res.resumedFrom == 0 {
			res.resumedFrom = start
		}
		if err == nil {
			how, verr := verifyBlob(inc, meta.ETag, meta.Size)
			if verr == nil {
				if err := os.Chmod(inc, 0o644); err != nil {
					return res, err
				}
				if err := os.Rename(inc, blob); err != nil {
					return res, err
				}
				res.verified = how
				switch {
				case res.status != "":
				case res.resumedFrom > 0:
					res.status = StatusResumed
				default:
					res.status = StatusDownloaded
				}
				return res, nil
			}
			// The bytes are wrong: nothing of them can be kept.
			fp.set(0)
			os.Remove(inc)
			if corruptTries++; corruptTries > 1 {
				return res, verr
			}
			res.status = StatusRefetched
			continue
		}
		if !retryable(ctx, err) || attempt >= c.Retries {
			return res, err
		}
		if err := sleep(ctx, c.RetryWait<<min(attempt, 4)); err != nil {
			return res, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// fetch downloads meta's bytes into the partial file inc, continuing
// after what inc already holds with a Range request. It returns the size
// inc had when the transfer began and the bytes that arrived.
func (c *Client) fetch(ctx context.Context, meta fileMeta, inc string, fp *fileProgress) (start, fetched int64, err error) {
	f, err := os.OpenFile(inc, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	off := st.Size()
	// limit is the most bytes the file may have: its announced size, or,
	// when neither the API nor the HEAD gave one, the hub's own limit on a
	// file. A response is never read past it, so a hostile or broken CDN
	// or mirror cannot fill the disk with .incomplete data.
	limit := meta.Size
	if limit < 0 {
		limit = maxFileSize
	}
	if off > limit {
		// Longer than the file can be: not a prefix of it.
		if err := f.Truncate(0); err != nil {
			return 0, 0, err
		}
		off = 0
	}
	fp.set(off)
	if meta.Size >= 0 && off == meta.Size {
		return off, 0, nil // complete but not yet verified and renamed
	}
	follow, _ := c.clients()
	req, err := c.newRequest(ctx, http.MethodGet, meta.Location)
	if err != nil {
		return off, 0, err
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := follow.Do(req)
	if err != nil {
		return off, 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		first, _, _, perr := parseContentRange(resp.Header.Get("Content-Range"))
		if perr != nil || first != off {
			// The server answered another range: start over.
			fp.set(0)
			if err := f.Truncate(0); err != nil {
				return off, 0, err
			}
			return off, 0, fmt.Errorf("%s: asked for bytes from %d, got Content-Range %q", req.URL.Redacted(), off, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			// The server ignored the Range header: take the whole file.
			fp.set(0)
			if err := f.Truncate(0); err != nil {
				return off, 0, err
			}
			off = 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		fp.set(0)
		if err := f.Truncate(0); err != nil {
			return off, 0, err
		}
		return off, 0, fmt.Errorf("%s: range from byte %d not satisfiable; starting over", req.URL.Redacted(), off)
	default:
		return off, 0, newHTTPError(resp)
	}
	want := limit - off // the most bytes this response may carry
	if resp.ContentLength > want {
		return off, 0, &permanentError{fmt.Errorf("%s: response announces %d bytes from byte %d, more than the %s", req.URL.Redacted(), resp.ContentLength, off, sizeBound(meta.Size, limit))}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, 0, err
	}
	// Written in whole 4 MiB pieces of the file rather than as each read
	// returns (a TLS record's 16 KiB): fewer system calls on a multi-GB
	// transfer, and the page cache keeps the file in 2 MiB folios (package
	// folio). What is buffered when the transfer stops is still written:
	// a resumed download starts from the file's size.
	w := folio.NewWriter(f, off)
	n, err := io.Copy(w, &countingReader{r: io.LimitReader(resp.Body, want), fp: fp})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return off, n, fmt.Errorf("%s: transfer stopped after %d bytes: %w", req.URL.Redacted(), off+n, err)
	}
	if n == want {
		// One byte more says the response is longer than the file (a
		// body without Content-Length, or one that lies): fail now
		// rather than take the rest, and keep none of these bytes.
		var one [1]byte
		if k, _ := io.ReadFull(resp.Body, one[:]); k > 0 {
			fp.set(0)
			if err := f.Truncate(0); err != nil {
				return off, n, err
			}
			return off, n, &permanentError{fmt.Errorf("%s: response goes on past byte %d, more than the %s", req.URL.Redacted(), limit, sizeBound(meta.Size, limit))}
		}
	}
	return off, n, nil
}

// maxFileSize bounds a file whose size neither the model API nor the HEAD
// announced: the Hugging Face hub takes no file over 50 GB. A variable
// only so that a test can lower it.
var maxFileSize int64 = 50 << 30

// sizeBound says which bound a response broke.
func sizeBound(size, limit int64) string {
	if size >= 0 {
		return fmt.Sprintf("%d bytes announced for the file", size)
	}
	return fmt.Sprintf("%d bytes a file of unknown size may have", limit)
}

// countingReader reports transferred bytes to the progress bar.
type countingReader struct {
	r  io.Reader
	fp *fileProgress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.fp.transferred(int64(n))
	return n, err
}

// parseContentRange reads "bytes FIRST-LAST/TOTAL" (TOTAL may be "*").
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !ok {
		return bad()
	}
	span, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return bad()
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return bad()
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return bad()
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return bad()
		}
	}
	return first, last, total, nil
}
