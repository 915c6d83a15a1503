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

// Forward runs the head pair alone, as headsStep runs it in a forward:
// it reads final-normed hidden states h [T][hidden] and writes the risk
// [T][levels] and category [T][categories] logits. pre is scratch of T×G
// floats. Heads trained apart from a model (package train) run here.
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

// Finish runs the end of the forward on the residual stream h [T][hidden]
// that the last layer left: the final norm, in place, and the eight guard
// heads, whose logits it returns in the order of [LogitTensors]
// ([T][classes] each).
func (m *Model) Finish(h []float32) ([4][]float32, error) {
	if m.uploadOnly {
		return [4][]float32{}, errUploadOnly
	}
	T := len(h) / m.hidden
	ws := m.getWorkspace(T)
	defer m.pool.Put(ws)
	ops := m.newCPUOps(&batch{T: T, ws: ws}, h[:T*m.hidden])
	headsStep(ops)
	var out [4][]float32
	for i, l := range ops.logits {
		out[i] = append([]float32(nil), l...)
	}
	return out, nil
}
