package eval

import (
	"github.com/streamguard/streamguard/guard"
)

// Counts is a binary confusion: unsafe is the positive class.
type Counts struct {
	TP int `json:"tp"`
	FP int `json:"fp"`
	FN int `json:"fn"`
	TN int `json:"tn"`
}

// ratio is a/b, 0 when b is 0 (the official evaluation's convention).
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func f1(p, r float64) float64 {
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// Scores are the unsafe-class precision, recall and F1 with their counts.
type Scores struct {
	Counts
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

func (c Counts) scores() Scores {
	p, r := ratio(c.TP, c.TP+c.FP), ratio(c.TP, c.TP+c.FN)
	return Scores{Counts: c, Precision: p, Recall: r, F1: f1(p, r)}
}

// add counts one decision.
func (c *Counts) add(gold, pred bool) {
	switch {
	case gold && pred:
		c.TP++
	case gold:
		c.FN++
	case pred:
		c.FP++
	default:
		c.TN++
	}
}

// Confusion counts gold labels (rows) against raw predicted levels
// (columns), before any mode mapping.
type Confusion struct {
	Gold      []string `json:"gold"`
	Predicted []string `json:"predicted"`
	Counts    [][]int  `json:"counts"`
}

// CategoryScores compare gold and predicted categories of non-safe items
// for one category: a true positive is an item unsafe in gold with this
// category and flagged with it. Detected counts the category's gold items
// flagged with any category.
type CategoryScores struct {
	Category        string  `json:"category"`
	Support         int     `json:"support"`
	Predicted       int     `json:"predicted"`
	TP              int     `json:"tp"`
	Precision       float64 `json:"precision"`
	Recall          float64 `json:"recall"`
	F1              float64 `json:"f1"`
	Detected        int     `json:"detected"`
	DetectionRecall float64 `json:"detection_recall"`
}

// TaskReport is the evaluation of prompts or of responses.
type TaskReport struct {
	Task  string `json:"task"`
	Items int    `json:"items"`
	// Strict and Loose score the same predictions in both modes.
	Strict Scores `json:"strict"`
	Loose  Scores `json:"loose"`
	// Confusion, Categories and Positions are for the report's mode.
	Confusion  Confusion        `json:"confusion"`
	Categories []CategoryScores `json:"categories"`
	// Uncategorised counts gold-unsafe items without a gold category.
	Uncategorised int        `json:"uncategorised"`
	Positions     *Positions `json:"positions,omitempty"`
}

// goldPart pairs an item's gold label for one task with the prediction.
type goldPart struct {
	label, category string
	pred            *Part
}

// scoreTask computes a task's report from gold labels and predictions;
// categories are the model's category names for the task.
func scoreTask(task string, parts []goldPart, mode guard.Mode, categories []string) *TaskReport {
	if len(parts) == 0 {
		return nil
	}
	rep := &TaskReport{Task: task, Items: len(parts)}
	var strict, loose Counts
	levels := []string{Safe, Unsafe, Controversial}
	if task == "response" {
		levels = append(levels, Mixed)
	}
	golds := []string{Safe, Unsafe, Controversial}
	rep.Confusion = Confusion{Gold: golds, Predicted: levels, Counts: make([][]int, len(golds))}
	for i := range golds {
		rep.Confusion.Counts[i] = make([]int, len(levels))
	}
	cat := map[string]*CategoryScores{}
	catOf := func(name string) *CategoryScores {
		if cat[name] == nil {
			cat[name] = &CategoryScores{Category: name}
		}
		return cat[name]
	}
	for _, p := range parts {
		strict.add(positive(p.label, guard.Strict), p.pred.Flagged(guard.Strict))
		loose.add(positive(p.label, guard.Loose), p.pred.Flagged(guard.Loose))
		col := indexOf(rep.Confusion.Predicted, p.pred.Level)
		if col < 0 { // a level outside the usual ones: give it a column
			rep.Confusion.Predicted = append(rep.Confusion.Predicted, p.pred.Level)
			for i := range rep.Confusion.Counts {
				rep.Confusion.Counts[i] = append(rep.Confusion.Counts[i], 0)
			}
			col = len(rep.Confusion.Predicted) - 1
		}
		rep.Confusion.Counts[indexOf(golds, p.label)][col]++

		gold, flagged := positive(p.label, mode), p.pred.Flagged(mode)
		if gold && p.category == "" {
			rep.Uncategorised++
		}
		if gold && p.category != "" {
			c := catOf(p.category)
			c.Support++
			if flagged {
				c.Detected++
				if p.pred.Category == p.category {
					c.TP++
				}
			}
		}
		// A gold-unsafe item without a gold category can say neither
		// whether the predicted category is right nor that it is wrong.
		if flagged && p.pred.Category != "" && (!gold || p.category != "") {
			catOf(p.pred.Category).Predicted++
		}
	}
	rep.Strict, rep.Loose = strict.scores(), loose.scores()
	// Model categories first, in label-map order; then any others.
	order := append([]string(nil), categories...)
	for name := range cat {
		if indexOf(order, name) < 0 {
			order = append(order, name)
		}
	}
	for _, name := range order {
		c := cat[name]
		if c == nil {
			continue
		}
		c.Precision, c.Recall = ratio(c.TP, c.Predicted), ratio(c.TP, c.Support)
		c.F1 = f1(c.Precision, c.Recall)
		c.DetectionRecall = ratio(c.Detected, c.Support)
		rep.Categories = append(rep.Categories, *c)
	}
	return rep
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}
