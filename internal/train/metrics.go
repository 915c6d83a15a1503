package train

// ClassMetrics are one class's precision, recall and F1 (0 where
// undefined) with its gold support.
type ClassMetrics struct {
	Label     string  `json:"label"`
	Support   int     `json:"support"`
	Predicted int     `json:"predicted"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

// Evaluation scores predictions against gold labels.
type Evaluation struct {
	Samples      int     `json:"samples"`
	RiskAccuracy float64 `json:"risk_accuracy"`
	// NonSafe is the binary detection view: Unsafe or Controversial
	// against Safe.
	NonSafe ClassMetrics   `json:"non_safe"`
	Risk    []ClassMetrics `json:"risk"`
	// RiskConfusion[gold][predicted].
	RiskConfusion [][]int `json:"risk_confusion"`
	// The category figures cover the samples whose gold risk is not Safe
	// (the category head means nothing on Safe ones).
	CategorySamples   int            `json:"category_samples"`
	CategoryAccuracy  float64        `json:"category_accuracy"`
	CategoryMacroF1   float64        `json:"category_macro_f1"`
	Categories        []ClassMetrics `json:"categories"`
	CategoryConfusion [][]int        `json:"category_confusion"`
}

// Evaluate scores preds (one per sample) against the samples' labels.
func Evaluate(samples []Sample, preds []Prediction, tax Taxonomy) Evaluation {
	L, C := len(tax.Risk), len(tax.Categories)
	ev := Evaluation{Samples: len(samples), RiskConfusion: square(L), CategoryConfusion: square(C)}
	right, catRight := 0, 0
	var ns struct{ tp, fp, fn, support, predicted int }
	for i, s := range samples {
		p := preds[i]
		ev.RiskConfusion[s.Risk][p.Risk]++
		if s.Risk == p.Risk {
			right++
		}
		gold, pred := s.Risk != 0, p.Risk != 0
		switch {
		case gold && pred:
			ns.tp++
		case pred:
			ns.fp++
		case gold:
			ns.fn++
		}
		if s.Category >= 0 {
			ev.CategorySamples++
			ev.CategoryConfusion[s.Category][p.Category]++
			if s.Category == p.Category {
				catRight++
			}
		}
	}
	if ev.Samples > 0 {
		ev.RiskAccuracy = float64(right) / float64(ev.Samples)
	}
	if ev.CategorySamples > 0 {
		ev.CategoryAccuracy = float64(catRight) / float64(ev.CategorySamples)
	}
	ev.NonSafe = prf("non-safe", ns.tp, ns.tp+ns.fp, ns.tp+ns.fn)
	ev.Risk = perClass(ev.RiskConfusion, tax.Risk)
	ev.Categories = perClass(ev.CategoryConfusion, tax.Categories)
	n := 0
	for _, c := range ev.Categories {
		if c.Support > 0 {
			ev.CategoryMacroF1 += c.F1
			n++
		}
	}
	if n > 0 {
		ev.CategoryMacroF1 /= float64(n)
	}
	return ev
}

func square(n int) [][]int {
	m := make([][]int, n)
	for i := range m {
		m[i] = make([]int, n)
	}
	return m
}

// perClass derives each class's metrics from a confusion matrix.
func perClass(conf [][]int, labels []string) []ClassMetrics {
	out := make([]ClassMetrics, len(labels))
	for k := range labels {
		support, predicted := 0, 0
		for j := range labels {
			support += conf[k][j]
			predicted += conf[j][k]
		}
		out[k] = prf(labels[k], conf[k][k], predicted, support)
	}
	return out
}

func prf(label string, tp, predicted, support int) ClassMetrics {
	m := ClassMetrics{Label: label, Support: support, Predicted: predicted}
	if predicted > 0 {
		m.Precision = float64(tp) / float64(predicted)
	}
	if support > 0 {
		m.Recall = float64(tp) / float64(support)
	}
	if m.Precision+m.Recall > 0 {
		m.F1 = 2 * m.Precision * m.Recall / (m.Precision + m.Recall)
	}
	return m
}
