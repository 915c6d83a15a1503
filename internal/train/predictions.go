package train

import (
	"encoding/json"
	"io"
)

// PredictionRecord is one validation sample with its gold label and the
// written model's verdict.
type PredictionRecord struct {
	Line         int             `json:"line"`
	ID           json.RawMessage `json:"id,omitempty"`
	Path         Path            `json:"path"`
	Token        int             `json:"token"` // judged response token index; -1 for the prompt
	Risk         string          `json:"risk"`
	Category     string          `json:"category"`
	GoldRisk     string          `json:"gold_risk"`
	GoldCategory string          `json:"gold_category,omitempty"`
}

// Records lists the path's validation samples with their verdicts, in
// sample order.
func (pr *PathReport) Records() []PredictionRecord {
	out := make([]PredictionRecord, len(pr.EvalSamples))
	for i, s := range pr.EvalSamples {
		ex := pr.evalExamples[s.Example]
		p := pr.Predictions[i]
		r := PredictionRecord{Line: ex.Line, ID: ex.ID, Path: pr.Path, Token: s.Token,
			Risk: pr.Taxonomy.Risk[p.Risk], Category: pr.Taxonomy.Categories[p.Category], GoldRisk: pr.Taxonomy.Risk[s.Risk]}
		if s.Category >= 0 {
			r.GoldCategory = pr.Taxonomy.Categories[s.Category]
		}
		out[i] = r
	}
	return out
}

// WritePredictions writes every path's validation records as JSON lines.
func (r *Report) WritePredictions(w io.Writer) error {
	enc := json.NewEncoder(w)
	for i := range r.Paths {
		for _, rec := range r.Paths[i].Records() {
			if err := enc.Encode(rec); err != nil {
				return err
			}
		}
	}
	return nil
}
