package qwen3

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"syscall"

	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/packfile"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// RepackCache says how a load used the repacked-weights file (see
// Options.RepackCache).
type RepackCache struct {
	// Path is the file the weights were mapped from or written to; empty
	// when neither happened.
	Path string
	// Mapped: the repacked weights were mapped from Path, not repacked.
	Mapped bool
	// Wrote: the weights were repacked into a new file, now at Path.
	Wrote bool
	// Notes say why a file was not used (stale, corrupt) or could not be
	// written, one per path tried.
	Notes []string
}

// awqPack is the repacked projections of an AWQ folder: mapped from a
// repacked-weights file, repacked now into a new one, or (no file can be
// written) repacked into memory.
type awqPack struct {
	units [][]string
	dims  [][]int // each unit's dimensions as a file stores them (unitDims)
	pre   map[string]*kernels.Int4Matrix
	key   packfile.Key
	file  *packfile.File    // the mapped file the matrices view, or nil
	build *packfile.Builder // the file being written, committed by finish
	use   RepackCache
}

// openAWQPack maps the first of paths that holds the current repacked
// projections of set; otherwise it repacks them into a new file at the
// first path that can be created (finish commits it), else into memory.
func openAWQPack(set *safetensors.Set, group int, skip []string, paths []string) *awqPack {
	p := &awqPack{units: fusionUnits(quantizedPrefixes(set, skip))}
	p.dims = make([][]int, len(p.units))
	for i, u := range p.units {
		var err error
		if p.dims[i], err = unitDims(set, u, group); err != nil {
			paths = nil // a malformed checkpoint: the load reports it
		}
	}
	if len(paths) > 0 {
		srcs, err := packfile.Describe(packInputs(set, p.units))
		if err != nil {
			p.use.Notes = append(p.use.Notes, fmt.Sprintf("repacked weights not cached: %v", err))
			paths = nil
		}
		p.key = packfile.Key{Layout: kernels.Int4Layout, Sources: srcs}
	}
	for _, path := range paths {
		f, err := packfile.Open(path, p.key)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue // nothing there: nothing to say
		}
		if err == nil {
			if p.pre, err = p.fromFile(f); err == nil {
				p.file, p.use.Path, p.use.Mapped = f, path, true
				return p
			}
			f.Close()
			err = fmt.Errorf("%s: %w", path, err)
		}
		p.use.Notes = append(p.use.Notes, fmt.Sprintf("not used: %v", err))
	}
	if len(paths) > 0 && p.repackToFile(set, group, paths) {
		return p
	}
	p.pre = prepackUnits(set, p.units, group)
	return p
}

// packInputs names the files of set for the key: the files the load has
// open, and where in each the tensors the pack is made from start.
func packInputs(set *safetensors.Set, units [][]string) []packfile.Input {
	in := make([]packfile.Input, len(set.Files()))
	at := make(map[string]int, len(in))
	for i, f := range set.Files() {
		in[i] = packfile.Input{Path: f.Path(), Opened: f.Stat()}
		at[f.Path()] = i
	}
	for _, u := range units {
		for _, name := range u {
			for _, part := range []string{".qweight", ".qzeros", ".scales"} {
				if t, err := set.Tensor(name + part); err == nil {
					i := at[t.File]
					in[i].Starts = append(in[i].Starts, t.At)
				}
			}
		}
	}
	return in
}

// repackToFile repacks every unit into a new file at the first of paths
// that can be created, reporting whether all went in.
func (p *awqPack) repackToFile(src Source, group int, paths []string) bool {
	units := make([]packfile.Unit, len(p.units))
	for i, u := range p.units {
		dims := p.dims[i]
		var qs, meta int64
		for _, N := range dims[2:] {
			q, m, err := kernels.Int4LayoutSizes(dims[0], N, group)
			if err != nil {
				return false
			}
			qs, meta = qs+int64(q), meta+int64(m)
		}
		units[i] = packfile.Unit{Names: u, Dims: dims, Sizes: []int64{qs, meta}}
	}
	var b *packfile.Builder
	for _, path := range paths {
		var err error
		if b, err = packfile.Create(path, p.key, units); err == nil {
			p.use.Path = path
			break
		}
		p.use.Notes = append(p.use.Notes, fmt.Sprintf("not written: %v", err))
	}
	if b == nil {
		return false
	}
	mats := make([][]*kernels.Int4Matrix, len(p.units))
	kernels.ParallelFor(len(p.units), kernels.Threads(), func(_, i int) {
		if mats[i] = repackUnitInto(src, p.units[i], group, b.Section(i, 0), b.Section(i, 1)); mats[i] != nil {
			b.Seal(i) // while the unit's last bytes are still in cache
		}
	})
	p.pre = make(map[string]*kernels.Int4Matrix)
	for i, u := range p.units {
		if mats[i] == nil {
			b.Abort()
			p.use.Path = ""
			return false // the load repeats the work and reports the error
		}
		for j, name := range u {
			p.pre[name] = mats[i][j]
		}
	}
	p.build = b
	return true
}

// repackUnitInto repacks the projections of one unit into qs and meta, or
// returns nil when one cannot be read or repacked.
func repackUnitInto(src Source, unit []string, group int, qs, meta []byte) []*kernels.Int4Matrix {
	reads := readUnit(src, unit, group)
	parts := make([]kernels.AWQParts, len(unit))
	for i, r := range reads {
		if r == nil {
			return nil
		}
		parts[i] = r.parts
	}
	ms, err := kernels.RepackAWQInto(parts, group, qs, meta)
	if err != nil {
		return nil
	}
	releaseReads(reads)
	return ms
}

// fromFile checks that f holds exactly p's units at the source's shapes
// and group size, verifies every entry's CRCs (in parallel: this also
// brings the pages in), and rebuilds the matrices over f's bytes.
func (p *awqPack) fromFile(f *packfile.File) (map[string]*kernels.Int4Matrix, error) {
	es := f.Entries()
	if len(es) != len(p.units) {
		return nil, &packfile.StaleError{Why: fmt.Sprintf("%d units, the model has %d", len(es), len(p.units))}
	}
	for i, u := range p.units {
		if e := es[i]; !slices.Equal(e.Names, u) || !slices.Equal(e.Dims, p.dims[i]) || len(e.Sections) != 2 {
			return nil, &packfile.StaleError{Why: fmt.Sprintf("unit %d is %v %v, the model's is %v %v", i, e.Names, e.Dims, u, p.dims[i])}
		}
	}
	errs := make([]error, len(es))
	kernels.ParallelFor(len(es), kernels.Threads(), func(_, i int) { errs[i] = f.Check(i) })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pre := make(map[string]*kernels.Int4Matrix)
	for i, u := range p.units {
		d := es[i].Dims
		ms, err := kernels.Int4FromLayout(d[0], d[1], d[2:], f.Section(i, 0), f.Section(i, 1))
		if err != nil {
			return nil, err
		}
		for j, name := range u {
			pre[name] = ms[j]
		}
	}
	return pre, nil
}

// unitDims is a unit's dimensions as a file stores them: the inputs, the
// group size, then each projection's outputs, from the qweight shapes.
func unitDims(src Source, unit []string, group int) ([]int, error) {
	dims := []int{0, group}
	for _, name := range unit {
		qw, err := src.Tensor(name + ".qweight")
		if err != nil {
			return nil, err
		}
		if len(qw.Shape) != 2 || (len(dims) > 2 && qw.Shape[0] != dims[0]) {
			return nil, fmt.Errorf("tensor %q: shape %v does not fit its unit", name+".qweight", qw.Shape)
		}
		dims[0] = qw.Shape[0]
		dims = append(dims, qw.Shape[1]*8)
	}
	return dims, nil
}

// finish ends the pack once the model is loaded (ok) or refused: a file
// being written is committed, or discarded with the refused model. It
// returns the mapped file the model's matrices view, if any.
func (p *awqPack) finish(ok bool) *packfile.File {
	if p.build == nil {
		return p.file
	}
	if !ok {
		p.build.Abort()
		return nil
	}
	f, err := p.build.Commit()
	if err != nil {
		p.use.Notes = append(p.use.Notes, fmt.Sprintf("not written: %v", err))
		p.use.Path = ""
	} else {
		p.use.Wrote = true
	}
	p.file = f // the matrices view it either way
	return f
}

// quantizedPrefixes are the projections of src stored with a qweight and
// not named by modules_to_not_convert (skip), in src's name order.
func quantizedPrefixes(src Source, skip []string) []string {
	n, ok := src.(namer)
	if !ok {
		return nil
	}
	var prefixes []string
	for _, name := range n.Names() {
		if p, ok := strings.CutSuffix(name, ".qweight"); ok && !notConverted(p, skip) {
			prefixes = append(prefixes, p)
		}
	}
	return prefixes
}
