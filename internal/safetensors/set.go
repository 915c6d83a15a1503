package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// SingleFile is the name of an unsharded checkpoint.
const SingleFile = "model.safetensors"

// Set is the tensors of a model folder, possibly spread over shards. It is
// safe for concurrent use; tensor bytes are valid until Close.
type Set struct {
	dir      string
	files    []*File
	names    []string       // sorted
	where    map[string]int // tensor -> index into files
	metadata map[string]string
}

// OpenDir opens the checkpoint in dir, reading only headers:
//   - with model.safetensors.index.json, every shard its weight_map names.
//     Each shard must hold exactly the tensors the index assigns to it.
//   - else model.safetensors alone;
//   - else every *.safetensors file in the folder, in name order; a tensor
//     name may appear in only one of them.
func OpenDir(dir string) (*Set, error) {
	indexPath := filepath.Join(dir, IndexFile)
	b, err := ReadIndex(indexPath)
	var tooBig *Error
	switch {
	case err == nil:
		return openIndexed(dir, indexPath, b)
	case errors.As(err, &tooBig):
		return nil, inFile(err, indexPath)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, &Error{File: indexPath, Msg: "read index", Err: unwrapPath(err)}
	}
	single := filepath.Join(dir, SingleFile)
	if _, err := os.Stat(single); err == nil {
		return openFiles(dir, []string{single})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &Error{File: dir, Msg: "read model folder", Err: unwrapPath(err)}
	}
	var paths []string
	for _, e := range entries { // ReadDir sorts by name
		if strings.HasSuffix(e.Name(), ".safetensors") && !e.IsDir() {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	if len(paths) == 0 {
		return nil, &Error{File: dir, Msg: "no " + IndexFile + ", " + SingleFile + " or other *.safetensors file in the folder"}
	}
	return openFiles(dir, paths)
}

// readIndex reads the index file at path, refusing one over maxIndexSize
// before reading it: the bound is on what is allocated, so the file's size
// must not decide the buffer. It is checked on the open file (a sparse
// file costs no disk at any size), and the read stops one byte past the
// bound in case the file grew since or is not a regular file, which
// parseIndex then refuses.
func ReadIndex(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxIndexSize {
		return nil, errIndexSize(st.Size())
	}
	// Room for the whole file and the one byte that shows it grew, so
	// that the usual read allocates once.
	buf := bytes.NewBuffer(make([]byte, 0, st.Size()+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, maxIndexSize+1)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func openIndexed(dir, indexPath string, b []byte) (*Set, error) {
	idx, err := parseIndex(b)
	if err != nil {
		return nil, inFile(err, indexPath)
	}
	shards := slices.Sorted(maps.Values(idx.weightMap))
	shards = slices.Compact(shards)
	paths := make([]string, len(shards))
	for i, s := range shards {
		paths[i] = filepath.Join(dir, s)
	}
	set, err := openFiles(dir, paths)
	if err != nil {
		var e *Error
		if errors.Is(err, fs.ErrNotExist) && errors.As(err, &e) {
			return nil, &Error{File: e.File, Msg: "shard listed in " + IndexFile + " is missing", Err: e.Err}
		}
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(idx.weightMap)) {
		path := filepath.Join(dir, idx.weightMap[name])
		i, ok := set.where[name]
		if !ok || set.files[i].path != path {
			set.Close()
			return nil, &Error{File: path, Tensor: name, Msg: "listed in " + IndexFile + " but missing from this shard"}
		}
	}
	for _, name := range set.names {
		if _, ok := idx.weightMap[name]; !ok {
			path := set.files[set.where[name]].path
			set.Close()
			return nil, &Error{File: path, Tensor: name, Msg: "present in the shard but not listed in " + IndexFile}
		}
	}
	return set, nil
}

// openFiles opens paths in order; tensor names must be unique across them.
func openFiles(dir string, paths []string) (*Set, error) {
	s := &Set{dir: dir, where: map[string]int{}, metadata: map[string]string{}}
	for i, p := range paths {
		f, err := Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.files = append(s.files, f)
		for _, t := range f.header.Tensors {
			if j, dup := s.where[t.Name]; dup {
				s.Close()
				return nil, &Error{File: p, Tensor: t.Name, Msg: fmt.Sprintf("also present in %s", s.files[j].path)}
			}
			s.where[t.Name] = i
			s.names = append(s.names, t.Name)
		}
		for k, v := range f.header.Metadata {
			if _, ok := s.metadata[k]; !ok {
				s.metadata[k] = v
			}
		}
	}
	slices.Sort(s.names)
	return s, nil
}

// Dir is the folder the set was opened from.
func (s *Set) Dir() string { return s.dir }

// Names lists every tensor name, sorted.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Files lists the open files in name order.
func (s *Set) Files() []*File { return s.files }

// Metadata merges the files' __metadata__; where files disagree on a key,
// the first file in name order wins. The map is a copy.
func (s *Set) Metadata() map[string]string { return maps.Clone(s.metadata) }

// Has reports whether any file holds the named tensor.
func (s *Set) Has(name string) bool {
	_, ok := s.where[name]
	return ok
}

// Info describes the named tensor and gives the path of its file.
func (s *Set) Info(name string) (TensorInfo, string, bool) {
	i, ok := s.where[name]
	if !ok {
		return TensorInfo{}, "", false
	}
	info, _ := s.files[i].Info(name)
	return info, s.files[i].path, true
}

// Tensor returns the named tensor, viewing its file's mapping.
func (s *Set) Tensor(name string) (*Tensor, error) {
	i, ok := s.where[name]
	if !ok {
		return nil, &Error{File: s.dir, Tensor: name, Msg: "no such tensor in the model folder"}
	}
	return s.files[i].Tensor(name)
}

// ReleaseMappings is File.ReleaseMapping for every file.
func (s *Set) ReleaseMappings() {
	for _, f := range s.files {
		f.ReleaseMapping()
	}
}

// Close closes every file.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
