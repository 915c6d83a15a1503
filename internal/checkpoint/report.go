package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Status classifies one tensor of a report.
type Status string

const (
	Used       Status = "USED"        // expected, right shape and dtype
	Unexpected Status = "UNEXPECTED"  // in the checkpoint but not part of the model
	Missing    Status = "MISSING"     // needed but absent
	WrongShape Status = "WRONG SHAPE" // present, shape disagrees with config.json
	WrongDType Status = "WRONG DTYPE" // present, right shape, dtype not usable
	Unchecked  Status = "UNCHECKED"   // config.json unusable, so nothing to check against
)

// Statuses lists the statuses in report order.
var Statuses = []Status{Used, Unexpected, Missing, WrongShape, WrongDType, Unchecked}

// TokenizerFiles must sit next to the weights.
var TokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json"}

// TensorReport is one row of the load report.
type TensorReport struct {
	Name          string   `json:"name"`
	Status        Status   `json:"status"`
	DType         string   `json:"dtype,omitempty"`
	Quant         Quant    `json:"quant,omitempty"`
	Shape         []int    `json:"shape"`
	ExpectedShape []int    `json:"expected_shape,omitempty"`
	ExpectedDType []string `json:"expected_dtype,omitempty"`
	Bytes         int64    `json:"bytes"`
	File          string   `json:"file,omitempty"`
	Note          string   `json:"note,omitempty"`
}

// FileReport describes one safetensors file of the folder.
type FileReport struct {
	Name    string `json:"name"`
	Bytes   int64  `json:"bytes"`
	Tensors int    `json:"tensors"`
}

// LoadReport is the verdict on a model folder: every tensor classified,
// with the problems that keep it from loading as a Qwen3Guard-Stream model
// stated in words.
type LoadReport struct {
	Dir           string            `json:"dir"`
	Architectures []string          `json:"architectures"`
	Guard         bool              `json:"guard"`
	Quantization  string            `json:"quantization"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Files         []FileReport      `json:"files"`
	Tensors       []TensorReport    `json:"tensors"`
	Counts        map[Status]int    `json:"counts"`
	TotalBytes    int64             `json:"total_bytes"`
	UsedBytes     int64             `json:"used_bytes"`
	// Parameters counts the weights of USED tensors, 8 per packed AWQ word.
	Parameters int64 `json:"parameters"`
	// Diagnosis names a recognised failure pattern, such as an export that
	// dropped the guard heads.
	Diagnosis  string      `json:"diagnosis,omitempty"`
	Problems   []string    `json:"problems"`
	Heuristics []Heuristic `json:"heuristics,omitempty"`
	// Tokenizer is set by CheckTokenizerFile.
	Tokenizer *TokenizerReport `json:"tokenizer,omitempty"`
	Config    *config.Config   `json:"-"`
}

// OK reports whether the folder is a complete Qwen3Guard-Stream model:
// guard architecture, every tensor present and used, nothing else wrong.
func (r *LoadReport) OK() bool {
	if !r.Guard || len(r.Problems) > 0 || r.Diagnosis != "" || len(r.Tensors) == 0 {
		return false
	}
	for _, t := range r.Tensors {
		if t.Status != Used {
			return false
		}
	}
	return true
}

// Report judges the model folder dir. It reads config.json (and
// quant_config.json), the safetensors headers and, only for an lm_head, a
// small sample of rows for the random-init heuristic; weights are otherwise
// never read. Everything wrong with the folder is a problem in the report;
// the error is for a dir that cannot be read at all.
func Report(dir string) (*LoadReport, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory (give the model folder)", dir)
	}
	r := &LoadReport{Dir: dir, Counts: map[Status]int{}, Quantization: "none"}
	problem := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }

	cfg, err := config.Load(dir)
	if err != nil {
		problem("config: %s", printable(err.Error()))
	} else {
		r.Config = cfg
		r.Architectures = cfg.Architectures
		r.Guard = cfg.IsGuard()
		if q := cfg.QuantizationConfig; q != nil {
			r.Quantization = describeQuant(q)
		}
		if !r.Guard {
			problem("config.json architectures is %q, not [%q]: this is not a Qwen3Guard-Stream model", cfg.Architectures, config.GuardArchitecture)
		}
		if err := cfg.Validate(r.Guard); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				problem("config.json: %s", printable(line)) // rope_scaling is printed with %v
			}
		}
		for _, p := range AWQShapeProblems(cfg) {
			problem("config.json: %s", printable(p))
		}
	}
	for _, name := range TokenizerFiles {
		p := filepath.Join(dir, name)
		switch fi, err := os.Stat(p); {
		case errors.Is(err, fs.ErrNotExist):
			problem("%s is missing: the guard needs the Qwen3 tokenizer files next to the weights", name)
		case err != nil:
			problem("%s: %s", name, printable(err.Error()))
		case !fi.Mode().IsRegular() || fi.Size() == 0:
			problem("%s is empty or not a regular file", name)
		}
	}

	set, err := safetensors.OpenDir(dir)
	if err != nil {
		problem("checkpoint unreadable, no tensor checked: %s", printable(err.Error()))
		r.finish()
		return r, nil
	}
	defer set.Close()
	r.Metadata = set.Metadata()
	for _, f := range set.Files() {
		fr := FileReport{Name: filepath.Base(f.Path()), Tensors: len(f.Header().Tensors)}
		if fi, err := os.Stat(f.Path()); err == nil {
			fr.Bytes = fi.Size()
		}
		r.Files = append(r.Files, fr)
	}

	var exps []Expectation
	if cfg != nil {
		exps = Expected(cfg)
		if exps == nil {
			problem("config.json sizes are unusable (non-positive, or more than %d layers), so no tensor can be checked", MaxLayers)
		}
	}
	r.classify(set, exps)
	if cfg != nil {
		r.diagnose(set, cfg)
	}
	r.finish()
	return r, nil
}

func describeQuant(q *config.Quantization) string {
	s := fmt.Sprintf("%s w%d g%d", q.QuantMethod, q.Bits, q.GroupSize)
	if q.Version != "" {
		s += " " + strings.ToLower(q.Version)
	}
	if q.ZeroPoint != nil && !*q.ZeroPoint {
		s += " symmetric"
	}
	return s
}

// classify fills r.Tensors: expectations in checkpoint order, then every
// tensor nobody expected, sorted by name. A nil exps means the config is
// unusable and every tensor is UNCHECKED.
func (r *LoadReport) classify(set *safetensors.Set, exps []Expectation) {
	seen := map[string]bool{}
	for _, e := range exps {
		info, file, ok := set.Info(e.Name)
		if !ok {
			if !e.Optional {
				r.Tensors = append(r.Tensors, TensorReport{Name: e.Name, Status: Missing, Quant: e.Quant,
					ExpectedShape: e.Shape, ExpectedDType: dtypeNames(e.DTypes), Note: missingNote(e, set)})
			}
			continue
		}
		seen[e.Name] = true
		t := row(info, file, e.Quant)
		switch {
		case !shapeMatches(info.Shape, e.Shape):
			t.Status = WrongShape
			t.ExpectedShape = e.Shape
			t.Note = fmt.Sprintf("config.json implies %s", shapeString(e.Shape))
		case !slices.Contains(e.DTypes, info.DType):
			t.Status = WrongDType
			t.ExpectedDType = dtypeNames(e.DTypes)
			t.Note = fmt.Sprintf("%s must be %s", e.Kind, strings.Join(dtypeNames(e.DTypes), " or "))
		default:
			t.Status = Used
		}
		r.Tensors = append(r.Tensors, t)
	}
	for _, name := range set.Names() {
		if seen[name] {
			continue
		}
		info, file, _ := set.Info(name)
		t := row(info, file, "")
		if exps == nil {
			t.Status = Unchecked
		} else {
			t.Status = Unexpected
			t.Quant, t.Note = unexpectedNote(name, r.Config)
		}
		r.Tensors = append(r.Tensors, t)
	}
}

func row(info safetensors.TensorInfo, file string, q Quant) TensorReport {
	return TensorReport{Name: info.Name, DType: string(info.DType), Quant: q, Shape: info.Shape,
		Bytes: info.Size(), File: filepath.Base(file)}
}

func shapeMatches(got, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if want[i] != Unknown && got[i] != want[i] {
			return false
		}
	}
	return true
}

func dtypeNames(ds []safetensors.DType) []string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = string(d)
	}
	return s
}

// missingNote explains a missing tensor when the folder stores the same
// module in the other layout.
func missingNote(e Expectation, set *safetensors.Set) string {
	switch {
	case slices.Contains(HeadNames, e.Name) && set.Has(e.Module+".qweight"):
		return "guard head stored AWQ-quantized; the heads must stay in full precision (AWQ only converts decoder-layer Linears)"
	case e.Quant == AWQ && set.Has(e.Module+".weight"):
		return "config.json declares this Linear AWQ-quantized, but the folder stores it unquantized (" + e.Module + ".weight); list it in modules_to_not_convert or quantize it"
	case e.Quant == Plain && e.Kind == Linear && set.Has(e.Module+".qweight"):
		return "the folder stores this Linear AWQ-quantized, but config.json does not (no quantization_config, or the module is in modules_to_not_convert)"
	case slices.Contains(HeadNames, e.Name):
		return "guard head: without it the model cannot classify"
	}
	return ""
}

// unexpectedNote says what an unexpected tensor probably is.
func unexpectedNote(name string, cfg *config.Config) (Quant, string) {
	var q Quant
	for _, suffix := range []string{".qweight", ".qzeros", ".scales"} {
		if strings.HasSuffix(name, suffix) {
			q = AWQ
		}
	}
	switch {
	case strings.HasPrefix(name, "lm_head."):
		return q, "an output layer of a causal LM; Qwen3Guard-Stream has no lm_head (its outputs are the 8 guard head tensors)"
	case q == AWQ && (cfg == nil || !cfg.IsAWQ()):
		return q, "an AWQ tensor, but config.json has no AWQ quantization_config"
	case q == AWQ:
		return q, "an AWQ tensor of a module that is unquantized under modules_to_not_convert, or not part of the model"
	case strings.HasSuffix(name, ".bias"):
		return q, "Qwen3 Linears and norms have no bias"
	case strings.HasPrefix(name, "model.layers."):
		return q, "not part of a Qwen3 decoder layer, or beyond num_hidden_layers"
	}
	return q, "not part of the model"
}

// finish computes the totals and turns the tensor rows into problems.
func (r *LoadReport) finish() {
	byStatus := map[Status][]string{}
	for _, t := range r.Tensors {
		r.Counts[t.Status]++
		r.TotalBytes += t.Bytes
		if t.Status == Used {
			r.UsedBytes += t.Bytes
			r.Parameters += params(t)
		}
		if t.Status != Used {
			byStatus[t.Status] = append(byStatus[t.Status], t.Name)
		}
	}
	describe := map[Status]string{
		Missing:    "missing",
		WrongShape: "with a shape that disagrees with config.json",
		WrongDType: "with an unusable dtype",
		Unexpected: "not part of the model (UNEXPECTED)",
	}
	for _, s := range []Status{Missing, WrongShape, WrongDType, Unexpected} {
		names := byStatus[s]
		if len(names) == 0 {
			continue
		}
		r.Problems = append(r.Problems, fmt.Sprintf("%d %s %s: %s", len(names), plural(len(names), "tensor", "tensors"), describe[s], listSome(printableAll(names), 8)))
	}
	for _, t := range r.Tensors {
		if t.Status == WrongShape || t.Status == WrongDType {
			if len(byStatus[WrongShape])+len(byStatus[WrongDType]) <= 8 {
				r.Problems = append(r.Problems, fmt.Sprintf("%s is %s %s; %s", printable(t.Name), printable(t.DType), shapeString(t.Shape), t.Note))
			}
		}
	}
}

func params(t TensorReport) int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	if strings.HasSuffix(t.Name, ".qweight") {
		n *= 8
	}
	if strings.HasSuffix(t.Name, ".qzeros") || strings.HasSuffix(t.Name, ".scales") {
		return 0
	}
	return n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// listSome names up to max items, then says how many more there are.
func listSome(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, ... and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d == Unknown {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
