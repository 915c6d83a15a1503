package train

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/hub"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// HeadsFile holds the guard heads of a model written by train-heads.
const HeadsFile = "guard-heads.safetensors"

// backboneFile replaces model.safetensors when the heads are split off: a
// folder with an index should not also hold a file named like an
// unsharded checkpoint.
const backboneFile = "model-backbone.safetensors"

// OutputFile describes one file of the written model.
type OutputFile struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
	// How is "linked" (a hard link to the source file), "copied" (the
	// source file's bytes), "rewritten" (the source's tensors without the
	// heads) or "written" (new).
	How string `json:"how"`
}

// writeModel writes the model folder out: every tensor of src except the
// heads, unchanged (files without heads hard-linked, or copied when
// linking fails or copy is set; files with heads rewritten without them),
// the 8 heads in HeadsFile (those in newHeads replaced), an index, cfg as
// config.json, and every other file of srcDir (tokenizer files, generation
// config) linked or copied.
func writeModel(srcDir, out string, src *safetensors.Set, cfg *config.Config, newHeads map[string]*safetensors.Tensor, copyFiles bool) (files []OutputFile, err error) {
	created, err := prepareOut(srcDir, out)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && created {
			os.RemoveAll(out)
		}
	}()
	weightMap := map[string]string{}
	var total int64
	used := map[string]bool{HeadsFile: true}
	for _, f := range src.Files() {
		base := filepath.Base(f.Path())
		var keep []safetensors.TensorInfo
		heads := 0
		for _, t := range f.Header().Tensors {
			if slices.Contains(checkpoint.HeadNames, t.Name) {
				heads++
			} else {
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			continue
		}
		name := base
		if heads > 0 && (name == safetensors.SingleFile || name == HeadsFile) {
			name = backboneFile
		}
		if used[name] {
			return nil, fmt.Errorf("%s: two files of the output would be named %s", f.Path(), name)
		}
		used[name] = true
		dst := filepath.Join(out, name)
		var of OutputFile
		if heads == 0 {
			how, err := linkOrCopy(f.Path(), dst, copyFiles)
			if err != nil {
				return nil, err
			}
			of = OutputFile{Name: name, How: how}
		} else {
			if err := rewriteWithout(f, dst, keep); err != nil {
				return nil, err
			}
			of = OutputFile{Name: name, How: "rewritten"}
		}
		if st, err := os.Stat(dst); err == nil {
			of.Bytes = st.Size()
		}
		files = append(files, of)
		for _, t := range keep {
			weightMap[t.Name] = name
			total += t.Size()
		}
	}

	var heads []*safetensors.Tensor
	for _, name := range checkpoint.HeadNames {
		t := newHeads[name]
		if t == nil {
			if t, err = src.Tensor(name); err != nil {
				return nil, err
			}
		}
		heads = append(heads, t)
		weightMap[name] = HeadsFile
		total += int64(len(t.Data))
	}
	meta := map[string]string{"format": "pt", "heads": "streamguard train-heads"}
	if err := safetensors.WriteFile(filepath.Join(out, HeadsFile), meta, heads); err != nil {
		return nil, err
	}
	st, err := os.Stat(filepath.Join(out, HeadsFile))
	if err != nil {
		return nil, err
	}
	files = append(files, OutputFile{Name: HeadsFile, Bytes: st.Size(), How: "written"})
	if err := safetensors.WriteIndex(out, weightMap, total, nil); err != nil {
		return nil, err
	}
	if err := cfg.Write(out); err != nil {
		return nil, err
	}

	entries, err := os.ReadDir(srcDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".safetensors") || n == safetensors.IndexFile || n == "config.json" {
			continue
		}
		src := filepath.Join(srcDir, n)
		if !e.Type().IsRegular() {
			target, ok := hub.SnapshotFile(srcDir, n) // a hub snapshot's links
			if !ok {
				continue
			}
			src = target // what was checked is what is copied
		}
		how, err := linkOrCopy(src, filepath.Join(out, n), copyFiles)
		if err != nil {
			return nil, err
		}
		of := OutputFile{Name: n, How: how}
		if st, err := os.Stat(filepath.Join(out, n)); err == nil {
			of.Bytes = st.Size()
		}
		files = append(files, of)
	}
	return files, nil
}

// prepareOut makes out an empty folder that is not srcDir, reporting
// whether it created it.
func prepareOut(srcDir, out string) (bool, error) {
	if err := checkOut(srcDir, out); err != nil {
		return false, err
	}
	if _, err := os.Stat(out); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return false, err
	}
	return true, nil
}

// checkOut reports early, before any work, an output folder that
// prepareOut would refuse.
func checkOut(srcDir, out string) error {
	st, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("output %s exists and is not a folder", out)
	}
	if sst, err := os.Stat(srcDir); err == nil && os.SameFile(st, sst) {
		return fmt.Errorf("output %s is the source model folder; write the new model elsewhere", out)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("output folder %s is not empty (it holds %s); choose a new folder", out, entries[0].Name())
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies it when linking is not
// possible (another file system) or forceCopy is set. A symbolic link is
// resolved first: a link to a relative target would not resolve from dst.
func linkOrCopy(src, dst string, forceCopy bool) (string, error) {
	if real, err := filepath.EvalSymlinks(src); err == nil {
		src = real
	}
	if !forceCopy {
		if err := os.Link(src, dst); err == nil {
			return "linked", nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	o, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return "copied", o.Close()
}

// rewriteWithout writes the tensors keep of f, bytes unchanged and in
// their order, to dst with f's metadata.
func rewriteWithout(f *safetensors.File, dst string, keep []safetensors.TensorInfo) error {
	specs := make([]safetensors.TensorSpec, len(keep))
	for i, t := range keep {
		specs[i] = safetensors.TensorSpec{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	w, err := safetensors.Create(dst, f.Metadata(), specs)
	if err != nil {
		return err
	}
	for _, t := range keep {
		var tt *safetensors.Tensor
		if tt, err = f.Tensor(t.Name); err != nil {
			break
		}
		if err = w.WriteTensor(t.Name, tt.Data); err != nil {
			break
		}
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// headTensors turns a path's stored weights into the four checkpoint
// tensors.
func headTensors(p Path, h *Head, s *stored) map[string]*safetensors.Tensor {
	names := headNames(p)
	shapes := [4][]int{{h.Inner, h.Hidden}, {h.Inner}, {h.Levels, h.Inner}, {h.Categories, h.Inner}}
	out := make(map[string]*safetensors.Tensor, 4)
	for i := range 4 {
		var data []byte
		if s.bits[i] != nil {
			data = make([]byte, 0, 2*len(s.bits[i]))
			for _, b := range s.bits[i] {
				data = binary.LittleEndian.AppendUint16(data, b)
			}
		} else {
			data = make([]byte, 0, 4*len(s.f32[i]))
			for _, v := range s.f32[i] {
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
			}
		}
		out[names[i]] = &safetensors.Tensor{Name: names[i], DType: s.dtypes[i], Shape: shapes[i], Data: data}
	}
	return out
}

// withTaxonomy returns a copy of cfg describing the new heads: inner is
// guard_inner_size, and each path in taxes gets its label maps and num_*
// fields.
func withTaxonomy(cfg *config.Config, inner int, taxes map[Path]Taxonomy) *config.Config {
	c := *cfg
	c.Extra = maps.Clone(cfg.Extra)
	c.GuardInnerSize = inner
	for p, tax := range taxes {
		if p == Query {
			c.QueryRiskLevelMap, c.QueryCategoryMap = config.SliceToMap(tax.Risk), config.SliceToMap(tax.Categories)
			c.NumQueryRiskLevel, c.NumQueryCategory = len(tax.Risk), len(tax.Categories)
		} else {
			c.ResponseRiskLevelMap, c.ResponseCategoryMap = config.SliceToMap(tax.Risk), config.SliceToMap(tax.Categories)
			c.NumRiskLevel, c.NumCategory = len(tax.Risk), len(tax.Categories)
		}
	}
	return &c
}
