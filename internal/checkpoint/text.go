package checkpoint

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// WriteText prints the report as a table of every tensor followed by a
// summary, the problems in words and the verdict.
func (r *LoadReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tSTATUS\tDTYPE\tQUANT\tSHAPE\tBYTES")
	for _, t := range r.Tensors {
		dtype, shape, bytes := t.DType, shapeString(t.Shape), fmt.Sprint(t.Bytes)
		switch t.Status {
		case Missing:
			dtype = "-"
			shape = "want " + shapeString(t.ExpectedShape)
			bytes = "-"
		case WrongShape:
			shape += " want " + shapeString(t.ExpectedShape)
		case WrongDType:
			dtype += " want " + strings.Join(t.ExpectedDType, "|")
		}
		q := string(t.Quant)
		if q == "" {
			q = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(t.Name), t.Status, printable(dtype), q, shape, bytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "Folder:        %s\n", printable(r.Dir))
	arch := strings.Join(printableAll(r.Architectures), ", ")
	if arch == "" {
		arch = "(none)"
	}
	kind := "not a guard model"
	if r.Guard {
		kind = "guard model"
	}
	fmt.Fprintf(w, "Architecture:  %s (%s)\n", arch, kind)
	fmt.Fprintf(w, "Quantization:  %s\n", r.Quantization)
	for i, f := range r.Files {
		label := "Files:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-14s %s (%s, %d tensors)\n", label, printable(f.Name), humanBytes(f.Bytes), f.Tensors)
	}
	if g := r.Metadata["generator"]; g != "" {
		fmt.Fprintf(w, "Generator:     %s (synthetic weights: preset %s, seed %s, dtype %s)\n",
			printable(g), printable(r.Metadata["preset"]), printable(r.Metadata["seed"]), printable(r.Metadata["dtype"]))
	}
	var counts []string
	for _, s := range Statuses {
		if n := r.Counts[s]; n > 0 || s != Unchecked {
			counts = append(counts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(r.Tensors) == 0 {
		counts = []string{"none checked"}
	}
	fmt.Fprintf(w, "Tensors:       %s\n", strings.Join(counts, ", "))
	fmt.Fprintf(w, "Size:          %s used of %s; %s parameters\n", humanBytes(r.UsedBytes), humanBytes(r.TotalBytes), humanCount(r.Parameters))
	if t := r.Tokenizer; t != nil {
		fmt.Fprintf(w, "Tokenizer:     %s\n", t.summary())
	}
	// Report puts untrusted names into these already made printable; this
	// is the backstop for anything that reaches them another way.
	if r.Diagnosis != "" {
		fmt.Fprintf(w, "\nDiagnosis: %s\n", printable(r.Diagnosis))
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", printable(p))
		}
	}
	for _, h := range r.Heuristics {
		fmt.Fprintf(w, "\n%s\n", printable(h.Message))
	}
	fmt.Fprintln(w)
	if r.OK() {
		_, err := fmt.Fprintln(w, "OK: complete Qwen3Guard-Stream model, every tensor present and used.")
		return err
	}
	// The count is of what the report lists under Problems, and the
	// diagnosis beside them.
	what := fmt.Sprintf("%d %s", len(r.Problems), plural(len(r.Problems), "problem", "problems"))
	switch {
	case r.Diagnosis != "" && len(r.Problems) > 0:
		what += " and a diagnosis"
	case r.Diagnosis != "":
		what = "see the diagnosis"
	}
	_, err := fmt.Fprintf(w, "REFUSED: not a loadable Qwen3Guard-Stream model (%s).\n", what)
	return err
}

// printable is s as it may reach a terminal: unchanged when every rune
// is printable (strconv.IsPrint: no control characters, no bidi or other
// format characters, valid UTF-8), else Go-quoted. Tensor names,
// __metadata__, config.json strings and file names come from the
// checkpoint, and a raw ESC in them would let a downloaded model clear
// the screen, set the title, forge links or hide lines of the report;
// quoted, the odd name is visible as such.
func printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func printableAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = printable(s)
	}
	return out
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	}
	return fmt.Sprint(n)
}

// summary is the report's Tokenizer line.
func (t *TokenizerReport) summary() string {
	if !t.Checked {
		return t.File + " not checked (see the problems)"
	}
	vocab := "vocab_size unknown"
	if t.ModelVocabSize > 0 {
		vocab = fmt.Sprintf("vocab_size %d", t.ModelVocabSize)
	}
	bad := 0
	for _, c := range t.Scaffold {
		if !c.OK {
			bad++
		}
	}
	scaffold := fmt.Sprintf("the %d chat-scaffold tokens map to the Qwen3 ids", len(t.Scaffold))
	if bad > 0 {
		scaffold = fmt.Sprintf("%d of %d chat-scaffold tokens map to other ids than Qwen3's", bad, len(t.Scaffold))
	}
	verdict := "OK"
	if !t.OK {
		verdict = "REFUSED"
	}
	return fmt.Sprintf("%s, %d tokens (model %s); %s: %s", t.File, t.VocabSize, vocab, scaffold, verdict)
}
