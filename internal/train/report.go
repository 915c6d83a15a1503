package train

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText prints the report for people: features, per path the epochs,
// the evaluation of the written weights and the confusion matrices, then
// the files written.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	p.f("model %s (%s backbone, hidden %d) -> %s, guard_inner_size %d, %d threads, seed %d\n",
		r.Model, r.Backbone, r.Hidden, r.Out, r.Inner, r.Threads, r.Seed)
	for _, f := range r.Features {
		switch f.Cache {
		case "hit":
			p.f("features %s: %d conversations, %d rows, from the cache (%.1fs)\n", f.File, f.Conversations, f.Rows, f.Seconds)
		default:
			p.f("features %s: %d conversations, %d rows, %d tokens in %.1fs (%.1f tokens/s, %.1f conversations/s), cache %s\n",
				f.File, f.Conversations, f.Rows, f.Tokens, f.Seconds, f.TokensPerSecond, float64(f.Conversations)/max(f.Seconds, 1e-9), f.Cache)
		}
	}
	for _, pr := range r.Paths {
		p.f("\n== %s heads (init %s): %d categories, %d training / %d validation samples, dtypes %s\n",
			pr.Path, pr.Init, len(pr.Taxonomy.Categories), pr.TrainSamples, pr.ValSamples, strings.Join(pr.DTypes, "/"))
		if len(pr.KeptCategories) > 0 {
			p.f("rows taken from the source model: risk head, and categories %s\n", strings.Join(pr.KeptCategories, ", "))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "epoch\ttrain loss\tval loss\tval risk acc\tval category acc\tseconds\t\t")
		for _, e := range pr.Epochs {
			mark := ""
			if e.Epoch == pr.BestEpoch {
				mark = "best"
			}
			fmt.Fprintf(tw, "%d\t%.4f\t%.4f\t%.4f\t%.4f\t%.2f\t%s\t\n", e.Epoch, e.TrainLoss, e.ValLoss, e.ValRiskAccuracy, e.ValCategoryAccuracy, e.Seconds, mark)
		}
		p.err(tw.Flush())
		p.f("%.2f s per epoch\n", pr.SecondsPerEpoch)
		p.f("written weights, training set: risk accuracy %.4f, category accuracy %.4f\n", pr.Train.RiskAccuracy, pr.Train.CategoryAccuracy)
		if pr.Val != nil {
			p.evaluation(pr.Val, pr.Taxonomy)
		}
	}
	p.f("\nwrote %s:\n", r.Out)
	for _, f := range r.Files {
		p.f("  %-32s %12d bytes  %s\n", f.Name, f.Bytes, f.How)
	}
	p.f("total %.1fs\n", r.Seconds)
	return p.e
}

type printer struct {
	w io.Writer
	e error
}

func (p *printer) f(format string, a ...any) {
	if p.e == nil {
		_, p.e = fmt.Fprintf(p.w, format, a...)
	}
}

func (p *printer) err(err error) {
	if p.e == nil {
		p.e = err
	}
}

func (p *printer) evaluation(ev *Evaluation, tax Taxonomy) {
	p.f("validation (written weights): %d samples, risk accuracy %.4f; non-safe detection P %.4f R %.4f F1 %.4f\n",
		ev.Samples, ev.RiskAccuracy, ev.NonSafe.Precision, ev.NonSafe.Recall, ev.NonSafe.F1)
	p.classes("risk", ev.Risk)
	p.confusion("risk confusion (rows gold, columns predicted)", ev.RiskConfusion, tax.Risk)
	p.f("categories on %d non-Safe samples: accuracy %.4f, macro F1 %.4f\n", ev.CategorySamples, ev.CategoryAccuracy, ev.CategoryMacroF1)
	p.classes("category", ev.Categories)
	p.confusion("category confusion (rows gold, columns predicted)", ev.CategoryConfusion, tax.Categories)
}

func (p *printer) classes(kind string, cs []ClassMetrics) {
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tsupport\tpredicted\tprecision\trecall\tF1\n", kind)
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.4f\t%.4f\t%.4f\n", c.Label, c.Support, c.Predicted, c.Precision, c.Recall, c.F1)
	}
	p.err(tw.Flush())
}

func (p *printer) confusion(title string, m [][]int, labels []string) {
	p.f("%s:\n", title)
	w := len(fmt.Sprint(len(labels) - 1))
	for _, row := range m {
		for _, v := range row {
			w = max(w, len(fmt.Sprint(v)))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%*s", w, "")
	for j := range labels {
		fmt.Fprintf(&b, " %*d", w, j)
	}
	p.f("%s\n", b.String())
	for i, row := range m {
		b.Reset()
		fmt.Fprintf(&b, "%*d", w, i)
		for _, v := range row {
			fmt.Fprintf(&b, " %*d", w, v)
		}
		p.f("%s  %s\n", b.String(), labels[i])
	}
}
