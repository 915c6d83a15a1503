package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// RepoInfo is a repository at one revision, from the hub's model API.
type RepoInfo struct {
	ID     string
	Commit string
	Files  []RepoFile
}

// RepoFile is one file of a repository.
type RepoFile struct {
	Name string
	// Size is the file's size in bytes, -1 when the hub did not say.
	Size int64
	// SHA256 is the content hash of an LFS file ("" for small files).
	SHA256 string
}

// maxInfoBody bounds the model API answer (a repository with thousands
// of files is well under it).
const maxInfoBody = 32 << 20

// apiURL is the model API route for ref, with the per-file metadata.
func (c *Client) apiURL(ref Ref) string {
	return c.Endpoint + "/api/models/" + ref.Repo + "/revision/" + url.PathEscape(ref.Revision) + "?blobs=true"
}

// RepoInfo asks the hub which commit ref's revision is and which files it
// holds.
func (c *Client) RepoInfo(ctx context.Context, ref Ref) (*RepoInfo, error) {
	follow, _ := c.clients()
	req, err := c.newRequest(ctx, http.MethodGet, c.apiURL(ref))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := follow.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, newHTTPError(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxInfoBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInfoBody {
		return nil, fmt.Errorf("%s: answer larger than %d bytes", req.URL.Redacted(), maxInfoBody)
	}
	info, err := parseRepoInfo(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.URL.Redacted(), err)
	}
	return info, nil
}

// parseRepoInfo reads the model API's JSON: {"id", "sha", "siblings":
// [{"rfilename", "size", "lfs": {"sha256", "size"}}]}. It checks what the
// cache will be built from: a commit hash, safe and unique file names.
func parseRepoInfo(b []byte) (*RepoInfo, error) {
	var raw struct {
		ID       string `json:"id"`
		SHA      string `json:"sha"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
			Size      *int64 `json:"size"`
			LFS       *struct {
				SHA256 string `json:"sha256"`
				Size   *int64 `json:"size"`
			} `json:"lfs"`
		} `json:"siblings"`
	}
	if err := unmarshalJSON(b, &raw); err != nil {
		return nil, fmt.Errorf("model info: %w", err)
	}
	if !isCommit(raw.SHA) {
		return nil, fmt.Errorf("model info: sha %q is not a commit hash", raw.SHA)
	}
	info := &RepoInfo{ID: raw.ID, Commit: raw.SHA}
	seen := map[string]bool{}
	for i, s := range raw.Siblings {
		if err := checkFileName(s.RFilename); err != nil {
			return nil, fmt.Errorf("model info: sibling %d: %w", i, err)
		}
		if seen[s.RFilename] {
			return nil, fmt.Errorf("model info: file %q listed twice", s.RFilename)
		}
		seen[s.RFilename] = true
		f := RepoFile{Name: s.RFilename, Size: -1}
		if s.Size != nil {
			f.Size = *s.Size
		}
		if s.LFS != nil {
			if s.LFS.SHA256 != "" {
				sum := strings.ToLower(s.LFS.SHA256)
				if len(sum) != 64 || !isLowerHex(sum) {
					return nil, fmt.Errorf("model info: file %q: lfs sha256 %q is not 64 hex digits", s.RFilename, s.LFS.SHA256)
				}
				f.SHA256 = sum
			}
			if s.LFS.Size != nil {
				f.Size = *s.LFS.Size
			}
		}
		if f.Size < -1 {
			return nil, fmt.Errorf("model info: file %q: negative size %d", s.RFilename, f.Size)
		}
		info.Files = append(info.Files, f)
	}
	return info, nil
}

// unmarshalJSON decodes one JSON value and refuses trailing data.
func unmarshalJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}
