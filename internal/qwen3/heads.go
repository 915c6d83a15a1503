package qwen3

// Head is one of the two guard head pairs (query, response): a projection of the
// final hidden state to guard_inner_size, an RMSNorm (no activation in
// between), then a risk-level and a category classifier.
type Head struct {
	Pre      Linear // [G][hidden]
	Norm     *RMSNorm
	Risk     Linear // [levels][G]
	Category Linear // [categories][G]
}

// Forward reads the final-normed hidden states h [T][hidden] and writes the
// risk [T][levels] and category [T][categories] logits. pre is scratch of
// T×G floats.
func (hd *Head) Forward(h []float32, T int, pre, risk, category []float32) {
	g, _ := hd.Pre.Dims()
	pre = pre[:T*g]
	hd.Pre.Forward(pre, h, T)
	hd.Norm.Forward(pre, pre)
	hd.Risk.Forward(risk, pre, T)
	hd.Category.Forward(category, pre, T)
}

// Levels and Categories are the classifier sizes.
func (hd *Head) Levels() int { n, _ := hd.Risk.Dims(); return n }

// Categories is the number of category logits.
func (hd *Head) Categories() int { n, _ := hd.Category.Dims(); return n }
