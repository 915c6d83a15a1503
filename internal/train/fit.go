package train

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// FitOptions control the optimisation of one head pair.
type FitOptions struct {
	Epochs      int     // upper bound on passes over the training samples
	Batch       int     // mini-batch size
	Patience    int     // stop after this many epochs without a better validation loss
	LR          float64 // AdamW learning rate
	WeightDecay float64 // AdamW decoupled weight decay
	Seed        uint64
	// Log, when set, receives each epoch's statistics as it ends.
	Log func(EpochStats)
}

// EpochStats are one epoch's numbers. Validation figures use the float32
// master weights; the final evaluation uses the written weights.
type EpochStats struct {
	Path      Path    `json:"path"`
	Epoch     int     `json:"epoch"`
	TrainLoss float64 `json:"train_loss"`
	ValLoss   float64 `json:"val_loss"`
	// ValRiskAccuracy is over all validation samples; ValCategoryAccuracy
	// over those whose gold risk is not Safe.
	ValRiskAccuracy     float64 `json:"val_risk_accuracy"`
	ValCategoryAccuracy float64 `json:"val_category_accuracy"`
	Seconds             float64 `json:"seconds"`
	Best                bool    `json:"best"`
}

// Data is a feature matrix and the samples that index its rows.
type Data struct {
	X       []float32 // [rows][hidden]
	Samples []Sample
}

// Fit trains h in place on train with AdamW and mini-batches, evaluating
// val after each epoch, and returns the weights of the epoch with the
// lowest validation loss (the last epoch's without validation samples).
// The run is a pure function of its inputs and Seed: sample order comes
// from the seeded generator, and every reduction has a fixed order.
func Fit(h *Head, p Path, train, val Data, o FitOptions) (*Head, []EpochStats, error) {
	if len(train.Samples) == 0 {
		return nil, nil, fmt.Errorf("%s: no training samples", p)
	}
	if o.Epochs < 1 || o.Batch < 1 {
		return nil, nil, errors.New("epochs and batch must be at least 1")
	}
	opt := NewAdamW(h, o.LR, o.WeightDecay)
	grad := NewHead(h.Hidden, h.Inner, h.Levels, h.Categories, h.Eps)
	B := min(o.Batch, len(train.Samples))
	w := h.newBatch(B)
	xb := make([]float32, B*h.Hidden)
	risk, cat := make([]int, B), make([]int, B)
	gen := newRNG(o.Seed, "shuffle/"+string(p))

	var best *Head
	bestLoss := math.Inf(1)
	var stats []EpochStats
	bad := 0
	for epoch := 1; epoch <= o.Epochs; epoch++ {
		start := time.Now()
		order := gen.perm(len(train.Samples))
		var sum float64
		for lo := 0; lo < len(order); lo += B {
			n := min(B, len(order)-lo)
			for j := range n {
				s := train.Samples[order[lo+j]]
				copy(xb[j*h.Hidden:(j+1)*h.Hidden], train.X[s.Row*h.Hidden:(s.Row+1)*h.Hidden])
				risk[j], cat[j] = s.Risk, s.Category
			}
			grad.zero()
			sum += h.lossGrad(w, xb, risk[:n], cat[:n], 1/float32(n), grad)
			opt.Step(h, grad)
		}
		if err := h.finite(); err != nil {
			return nil, stats, fmt.Errorf("%s: training diverged in epoch %d (%v); lower --lr", p, epoch, err)
		}
		st := EpochStats{Path: p, Epoch: epoch, TrainLoss: sum / float64(len(order))}
		if len(val.Samples) > 0 {
			ev := h.evaluate(w, val)
			st.ValLoss, st.ValRiskAccuracy, st.ValCategoryAccuracy = ev.loss, ev.riskAcc, ev.catAcc
			if math.IsNaN(ev.loss) || math.IsInf(ev.loss, 0) {
				// Finite weights whose logits overflow: no epoch could
				// be the best one.
				return nil, stats, fmt.Errorf("%s: training diverged in epoch %d (validation loss %v); lower --lr", p, epoch, ev.loss)
			}
		}
		st.Seconds = time.Since(start).Seconds()
		improved := len(val.Samples) == 0 || st.ValLoss < bestLoss
		if improved {
			bestLoss, best, bad = st.ValLoss, h.Clone(), 0
			st.Best = true
		} else {
			bad++
		}
		stats = append(stats, st)
		if o.Log != nil {
			o.Log(st)
		}
		if o.Patience > 0 && bad >= o.Patience {
			break
		}
	}
	if best == nil {
		return nil, stats, fmt.Errorf("%s: no epoch gave a validation loss to keep", p)
	}
	return best, stats, nil
}

// quickEval is the float32-weights evaluation used for early stopping.
type quickEval struct{ loss, riskAcc, catAcc float64 }

// evaluate computes the mean loss and the accuracies of h on d.
func (h *Head) evaluate(w *batch, d Data) quickEval {
	B := w.B
	xb := make([]float32, B*h.Hidden)
	risk, cat := make([]int, B), make([]int, B)
	var loss float64
	riskRight, catRight, catCount := 0, 0, 0
	for lo := 0; lo < len(d.Samples); lo += B {
		n := min(B, len(d.Samples)-lo)
		for j := range n {
			s := d.Samples[lo+j]
			copy(xb[j*h.Hidden:(j+1)*h.Hidden], d.X[s.Row*h.Hidden:(s.Row+1)*h.Hidden])
			risk[j], cat[j] = s.Risk, s.Category
		}
		h.forward(w, xb, n)
		loss += w.losses(h.Levels, risk[:n], cat[:n], 0)
		riskRight += w.riskRight
		catRight += w.catRight
		catCount += w.catCount
	}
	ev := quickEval{loss: loss / float64(len(d.Samples)), riskAcc: float64(riskRight) / float64(len(d.Samples))}
	if catCount > 0 {
		ev.catAcc = float64(catRight) / float64(catCount)
	}
	return ev
}
