package hubtest

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestAPIShapes checks the JSON the two listing routes answer, as
// huggingface_hub reads it: the revision API's sha and siblings (with
// blobs=true, sizes and LFS sha256), and the recursive tree listing with
// folders for nested files.
func TestAPIShapes(t *testing.T) {
	h := New(t)
	files := map[string]File{"config.json": {Data: []byte("{}")}, "a/b/w.bin": {Data: []byte("weights"), LFS: true}}
	repo := h.AddRepo("O/R", files)
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(h.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var info struct {
		SHA      string `json:"sha"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
			Size      int    `json:"size"`
			LFS       *struct {
				SHA256 string `json:"sha256"`
			} `json:"lfs"`
		} `json:"siblings"`
	}
	get("/api/models/O/R/revision/main?blobs=true", &info)
	if info.SHA != repo.Commit || len(info.Siblings) != 2 {
		t.Fatalf("%+v", info)
	}
	for _, s := range info.Siblings {
		f := files[s.RFilename]
		if s.Size != len(f.Data) || (s.LFS != nil) != f.LFS || (f.LFS && s.LFS.SHA256 != SHA256Hex(f.Data)) {
			t.Errorf("sibling %+v", s)
		}
	}
	var tree []struct {
		Type, Path, OID string
		Size            int
		LFS             *struct{ OID string }
	}
	get("/api/models/O/R/tree/"+repo.Commit+"?recursive=true", &tree)
	kinds := map[string]string{}
	for _, e := range tree {
		kinds[e.Path] = e.Type
		if e.Type == "file" && e.OID != GitBlobSHA1(files[e.Path].Data) {
			t.Errorf("tree entry %+v", e)
		}
	}
	want := map[string]string{"a": "directory", "a/b": "directory", "a/b/w.bin": "file", "config.json": "file"}
	if len(kinds) != len(want) {
		t.Errorf("tree %v, want %v", kinds, want)
	}
	for p, k := range want {
		if kinds[p] != k {
			t.Errorf("tree %v, want %v", kinds, want)
		}
	}
}
