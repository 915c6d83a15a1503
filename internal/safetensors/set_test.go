package safetensors

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// shardedDir writes a two-shard folder with an index and returns it.
func shardedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), map[string]string{"format": "pt", "shard": "1"},
		u8Tensor("a", 1), u8Tensor("b", 2, 3))
	mustWrite(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), map[string]string{"format": "pt", "shard": "2", "extra": "y"},
		u8Tensor("c", 4, 5, 6))
	err := WriteIndex(dir, map[string]string{
		"a": "model-00001-of-00002.safetensors",
		"b": "model-00001-of-00002.safetensors",
		"c": "model-00002-of-00002.safetensors",
	}, 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenDirSharded(t *testing.T) {
	dir := shardedDir(t)
	// A stray file next to the shards is not part of the checkpoint.
	mustWrite(t, filepath.Join(dir, "adapter.safetensors"), nil, u8Tensor("zzz", 0))
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Names = %q", got)
	}
	if len(s.Files()) != 2 || s.Dir() != dir {
		t.Errorf("Files = %d, Dir = %q", len(s.Files()), s.Dir())
	}
	info, file, ok := s.Info("c")
	if !ok || file != filepath.Join(dir, "model-00002-of-00002.safetensors") || info.DType != U8 || info.Size() != 3 {
		t.Errorf("Info(c) = %+v, %q, %v", info, file, ok)
	}
	c, err := s.Tensor("c")
	if err != nil || !slices.Equal(c.Data, []byte{4, 5, 6}) || c.File != file {
		t.Errorf("Tensor(c) = %+v, %v", c, err)
	}
	if !s.Has("a") || s.Has("zzz") {
		t.Error("Has is wrong")
	}
	_, err = s.Tensor("zzz")
	wantErr(t, err, dir, `tensor "zzz"`, "no such tensor")
	// The first shard in name order wins a metadata conflict.
	if m := s.Metadata(); m["shard"] != "1" || m["extra"] != "y" || m["format"] != "pt" || len(m) != 3 {
		t.Errorf("Metadata = %v", m)
	}
}

func TestOpenDirSingle(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, SingleFile), nil, u8Tensor("x", 7))
	// model.safetensors takes precedence over any other file.
	mustWrite(t, filepath.Join(dir, "other.safetensors"), nil, u8Tensor("x", 8))
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x, err := s.Tensor("x")
	if err != nil || x.Data[0] != 7 || len(s.Files()) != 1 {
		t.Errorf("x = %+v, %v, files %d", x, err, len(s.Files()))
	}
}

func TestOpenDirLoose(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "b.safetensors"), map[string]string{"k": "b"}, u8Tensor("from_b", 2))
	mustWrite(t, filepath.Join(dir, "a.safetensors"), map[string]string{"k": "a"}, u8Tensor("from_a", 1))
	os.Mkdir(filepath.Join(dir, "sub.safetensors"), 0o777)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hi"), 0o666)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Names(); !slices.Equal(got, []string{"from_a", "from_b"}) {
		t.Errorf("Names = %q", got)
	}
	if fs := s.Files(); len(fs) != 2 || filepath.Base(fs[0].Path()) != "a.safetensors" {
		t.Errorf("Files not in name order")
	}
	if s.Metadata()["k"] != "a" {
		t.Errorf("Metadata = %v", s.Metadata())
	}

	mustWrite(t, filepath.Join(dir, "c.safetensors"), nil, u8Tensor("from_a", 3))
	_, err = OpenDir(dir)
	wantErr(t, err, filepath.Join(dir, "c.safetensors"), `tensor "from_a"`, "also present in "+filepath.Join(dir, "a.safetensors"))
}

func TestOpenDirErrors(t *testing.T) {
	t.Run("empty folder", func(t *testing.T) {
		dir := t.TempDir()
		_, err := OpenDir(dir)
		wantErr(t, err, dir, "no model.safetensors.index.json, model.safetensors or other *.safetensors file")
	})
	t.Run("missing folder", func(t *testing.T) {
		_, err := OpenDir(filepath.Join(t.TempDir(), "nope"))
		wantErr(t, err, "nope", "no such file")
	})
	t.Run("missing shard", func(t *testing.T) {
		dir := shardedDir(t)
		shard := filepath.Join(dir, "model-00002-of-00002.safetensors")
		os.Remove(shard)
		_, err := OpenDir(dir)
		wantErr(t, err, shard, "shard listed in model.safetensors.index.json is missing")
	})
	t.Run("index entry missing from shard", func(t *testing.T) {
		dir := shardedDir(t)
		mustWrite(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), nil, u8Tensor("d", 1))
		WriteIndex(dir, map[string]string{
			"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
			"c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors",
		}, 0, nil)
		_, err := OpenDir(dir)
		wantErr(t, err, filepath.Join(dir, "model-00002-of-00002.safetensors"), `tensor "c"`, "listed in model.safetensors.index.json but missing from this shard")
	})
	t.Run("index points at the wrong shard", func(t *testing.T) {
		dir := shardedDir(t)
		WriteIndex(dir, map[string]string{
			"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
			"c": "model-00002-of-00002.safetensors",
		}, 0, nil)
		_, err := OpenDir(dir)
		wantErr(t, err, filepath.Join(dir, "model-00002-of-00002.safetensors"), `tensor "a"`, "missing from this shard")
	})
	t.Run("shard tensor not in index", func(t *testing.T) {
		dir := shardedDir(t)
		WriteIndex(dir, map[string]string{
			"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors",
		}, 0, nil)
		_, err := OpenDir(dir)
		wantErr(t, err, filepath.Join(dir, "model-00001-of-00002.safetensors"), `tensor "b"`, "present in the shard but not listed in model.safetensors.index.json")
	})
	t.Run("corrupt shard", func(t *testing.T) {
		dir := shardedDir(t)
		shard := filepath.Join(dir, "model-00001-of-00002.safetensors")
		os.Truncate(shard, 20)
		_, err := OpenDir(dir)
		wantErr(t, err, shard, "header length")
	})
	indexErrors := []struct{ name, index, want string }{
		{"bad JSON", `{"weight_map": {`, "invalid index"},
		{"duplicate entry", `{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}`, `duplicate key "a"`},
		{"path escape", `{"weight_map": {"a": "../x.safetensors"}}`, `tensor "a": weight_map shard "../x.safetensors" is not a file name`},
		{"absolute path", `{"weight_map": {"a": "/etc/x.safetensors"}}`, `tensor "a": weight_map shard "/etc/x.safetensors"`},
		{"shard not string", `{"weight_map": {"a": 1}}`, `weight_map entry "a" must be a string`},
		{"no weight_map", `{"metadata": {"total_size": 1}}`, "index has no weight_map"},
		{"empty weight_map", `{"weight_map": {}}`, "weight_map is empty"},
		{"bad total_size", `{"metadata": {"total_size": -1}, "weight_map": {"a": "x"}}`, "metadata.total_size must be a non-negative integer"},
	}
	for _, tc := range indexErrors {
		t.Run("index "+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeTemp(t, dir, IndexFile, []byte(tc.index))
			_, err := OpenDir(dir)
			wantErr(t, err, p, tc.want)
		})
	}
}

func TestParseIndex(t *testing.T) {
	idx, err := parseIndex([]byte(`{"metadata": {"total_size": 123, "format": "pt", "nested": {"x": [1]}},
		"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}, "future_field": [true]}`))
	if err != nil {
		t.Fatal(err)
	}
	if idx.totalSize != 123 || len(idx.weightMap) != 2 || idx.weightMap["b"] != "s2.safetensors" {
		t.Errorf("index = %+v", idx)
	}
	idx, err = parseIndex([]byte(`{"metadata": null, "weight_map": {"a": "s"}}`))
	if err != nil || idx.totalSize != -1 {
		t.Errorf("null metadata: %+v, %v", idx, err)
	}
}

func TestWriteIndexGolden(t *testing.T) {
	dir := t.TempDir()
	err := WriteIndex(dir, map[string]string{"b.weight": "model-00002-of-00002.safetensors", "a.weight": "model-00001-of-00002.safetensors"},
		1234, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, IndexFile))
	want := `{
  "metadata": {
    "format": "pt",
    "total_size": 1234
  },
  "weight_map": {
    "a.weight": "model-00001-of-00002.safetensors",
    "b.weight": "model-00002-of-00002.safetensors"
  }
}
`
	if string(got) != want {
		t.Errorf("index =\n%s\nwant\n%s", got, want)
	}
	wantErr(t, WriteIndex(dir, map[string]string{"a": "../x"}, 0, nil), IndexFile, `tensor "a"`, `shard "../x" is not a file name`)
	wantErr(t, WriteIndex(dir, map[string]string{"a": "x"}, -1, nil), "negative total_size")
	wantErr(t, WriteIndex(dir, nil, 0, nil), "empty weight_map")
	wantErr(t, WriteIndex(dir, map[string]string{"a": "x"}, 0, map[string]string{"total_size": "1"}), "total_size is reserved")
	wantErr(t, WriteIndex(filepath.Join(dir, "nope"), map[string]string{"a": "x"}, 0, nil), "nope", "write index")
}
