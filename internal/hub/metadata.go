package hub

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// fileMeta is what a HEAD on a file's resolve route tells.
type fileMeta struct {
	Commit string // X-Repo-Commit
	ETag   string // the blob id: X-Linked-Etag, else ETag, normalized
	Size   int64  // X-Linked-Size, else Content-Length; -1 unknown
	// Location is where the bytes are: the CDN a redirect pointed to, or
	// the resolve URL itself.
	Location string
}

// resolveURL is the hub route that serves file at rev.
func (c *Client) resolveURL(repo, rev, file string) string {
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return c.Endpoint + "/" + repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(segs, "/")
}

// maxRelativeRedirects bounds the same-host redirects a HEAD follows.
const maxRelativeRedirects = 10

// fileMetadata asks the hub about one file with a HEAD. Like
// huggingface_hub it follows relative redirects (a renamed repository)
// but stops at one to another host (the CDN), whose headers already carry
// the metadata and whose Location is where to download from.
func (c *Client) fileMetadata(ctx context.Context, repo, rev, file string) (fileMeta, error) {
	_, noFollow := c.clients()
	u := c.resolveURL(repo, rev, file)
	for range maxRelativeRedirects + 1 {
		req, err := c.newRequest(ctx, http.MethodHead, u)
		if err != nil {
			return fileMeta{}, err
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			return fileMeta{}, err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.Header.Get("Location") == "" {
				return fileMeta{}, &permanentError{fmt.Errorf("%s: redirect %d without a usable Location", u, resp.StatusCode)}
			}
			if loc.Host == "" {
				u = req.URL.ResolveReference(loc).String()
				continue
			}
			return metaFromHeaders(resp.Header, req.URL.ResolveReference(loc).String(), -1)
		}
		if resp.StatusCode != http.StatusOK {
			return fileMeta{}, newHTTPError(resp)
		}
		return metaFromHeaders(resp.Header, u, resp.ContentLength)
	}
	return fileMeta{}, &permanentError{fmt.Errorf("%s: more than %d redirects", c.resolveURL(repo, rev, file), maxRelativeRedirects)}
}

// metaFromHeaders reads the hub's file headers. contentLength is what the
// transport parsed (-1 if none), used when the header itself is gone.
func metaFromHeaders(h http.Header, location string, contentLength int64) (fileMeta, error) {
	m := fileMeta{Commit: strings.TrimSpace(h.Get("X-Repo-Commit")), Location: location, Size: -1}
	if !isCommit(m.Commit) {
		return m, &permanentError{fmt.Errorf("%s: no commit hash in X-Repo-Commit (%q): not a Hugging Face–compatible hub", location, m.Commit)}
	}
	raw := h.Get("X-Linked-Etag")
	if raw == "" {
		raw = h.Get("ETag")
	}
	if raw == "" {
		return m, &permanentError{fmt.Errorf("%s: no ETag: the file cannot be identified in the cache", location)}
	}
	etag, err := normalizeETag(raw)
	if err != nil {
		return m, &permanentError{fmt.Errorf("%s: %w", location, err)}
	}
	m.ETag = etag
	sz := h.Get("X-Linked-Size")
	if sz == "" {
		sz = h.Get("Content-Length")
	}
	if sz != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 10, 64)
		if err != nil || n < 0 {
			return m, &permanentError{fmt.Errorf("%s: bad size header %q", location, sz)}
		}
		m.Size = n
	} else if contentLength >= 0 {
		m.Size = contentLength
	}
	return m, nil
}
