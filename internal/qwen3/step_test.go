package qwen3

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// traceOps records the operations RunStep asks of a backend.
type traceOps struct{ ops []string }

var actNames = map[Act]string{ActHidden: "h", ActNormed: "xn", ActQKV: "qkv", ActAttn: "att", ActGateUp: "gu",
	ActMLP: "mlp", ActOut: "out", ActPre: "pre", ActLogits: "logits0", ActLogits + 1: "logits1", ActLogits + 2: "logits2", ActLogits + 3: "logits3"}

var tensorNames = map[Tensor]string{AttnNorm: "attn_norm", QKVProj: "qkv", OProj: "o", MLPNorm: "mlp_norm", GateUpProj: "gate_up",
	DownProj: "down", FinalNorm: "norm", HeadPre: "pre", HeadNorm: "pre_norm", HeadRisk: "risk", HeadCategory: "category"}

func (o *traceOps) add(f string, args ...any) { o.ops = append(o.ops, fmt.Sprintf(f, args...)) }
func (o *traceOps) Embed(dst Act)             { o.add("embed %s", actNames[dst]) }
func (o *traceOps) Norm(dst, x Act, w Weight) {
	o.add("%s = norm(%s, %d.%s)", actNames[dst], actNames[x], w.Layer, tensorNames[w.Tensor])
}
func (o *traceOps) Project(dst, x Act, w Weight, accumulate bool) {
	op := "="
	if accumulate {
		op = "+="
	}
	o.add("%s %s %d.%s(%s)", actNames[dst], op, w.Layer, tensorNames[w.Tensor], actNames[x])
}
func (o *traceOps) Attend(layer int, dst, qkv Act) {
	o.add("%s = attend%d(%s)", actNames[dst], layer, actNames[qkv])
}
func (o *traceOps) SiLUMul(layer int, dst, gu Act) {
	o.add("%s = silu_mul%d(%s)", actNames[dst], layer, actNames[gu])
}

// TestRunStepOrder pins the Qwen3Guard-Stream forward that every backend
// runs: pre-norm blocks with residual adds, the final norm in place, and
// the two head pairs' logits in the order of LogitTensors.
func TestRunStepOrder(t *testing.T) {
	var o traceOps
	RunStep(&o, 2)
	layer := func(i int) string {
		return strings.NewReplacer("L", fmt.Sprint(i)).Replace(`xn = norm(h, L.attn_norm)
qkv = L.qkv(xn)
att = attendL(qkv)
h += L.o(att)
xn = norm(h, L.mlp_norm)
gu = L.gate_up(xn)
mlp = silu_mulL(gu)
h += L.down(mlp)
`)
	}
	want := "embed h\n" + layer(0) + layer(1) + `h = norm(h, 0.norm)
pre = 0.pre(h)
pre = norm(pre, 0.pre_norm)
logits0 = 0.risk(pre)
logits1 = 0.category(pre)
pre = 1.pre(h)
pre = norm(pre, 1.pre_norm)
logits2 = 1.risk(pre)
logits3 = 1.category(pre)
`
	if got := strings.Join(o.ops, "\n") + "\n"; got != want {
		t.Errorf("RunStep ran\n%s\nwant\n%s", got, want)
	}
	// A head pair's Forward (the heads alone) and LogitTensors agree on
	// the order: response before query.
	if LogitTensors[0] != (Weight{HeadResponse, HeadRisk}) || LogitTensors[3] != (Weight{HeadQuery, HeadCategory}) {
		t.Errorf("LogitTensors = %v", LogitTensors)
	}
}

// TestFinishMatchesForward runs the layers with a LayerRunner and the end
// of the forward with Finish: the logits are bitwise those of Forward.
func TestFinishMatchesForward(t *testing.T) {
	m := tiny(t, safetensors.BF16).m
	ids := testIDs(11, 7)
	outs, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.NewLayerRunner([]int{len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	H := m.Hidden()
	h := make([]float32, len(ids)*H)
	for t0, id := range ids {
		m.Embed.Lookup(h[t0*H:(t0+1)*H], id)
	}
	for _, l := range m.Layers {
		r.Layer(l, h)
	}
	logits, err := m.Finish(h)
	if err != nil {
		t.Fatal(err)
	}
	o := outs[0]
	for i, want := range [4][][]float32{o.Risk, o.Category, o.QueryRisk, o.QueryCategory} {
		n := len(want[0])
		if len(logits[i]) != len(ids)*n {
			t.Fatalf("logits %d: %d values, want %d", i, len(logits[i]), len(ids)*n)
		}
		for p, row := range want {
			for j, v := range row {
				if g := logits[i][p*n+j]; g != v {
					t.Fatalf("logits %d, position %d, class %d: Finish %v, Forward %v", i, p, j, g, v)
				}
			}
		}
	}
}

// TestSplitOutputs places every value: two sequences of 2 and 1 tokens,
// heads of 2, 3, 1 and 4 classes, hidden states of 2.
func TestSplitOutputs(t *testing.T) {
	cols := [4]int{2, 3, 1, 4}
	var logits [4][]float32
	for j, c := range cols {
		for i := range 3 * c {
			logits[j] = append(logits[j], float32(100*j+i))
		}
	}
	hidden := []float32{-1, -2, -3, -4, -5, -6}
	outs := SplitOutputs([]int{2, 1}, logits, hidden, 2)
	want := []Output{
		{Risk: [][]float32{{0, 1}, {2, 3}}, Category: [][]float32{{100, 101, 102}, {103, 104, 105}},
			QueryRisk: [][]float32{{200}, {201}}, QueryCategory: [][]float32{{300, 301, 302, 303}, {304, 305, 306, 307}},
			Hidden: [][]float32{{-1, -2}, {-3, -4}}},
		{Risk: [][]float32{{4, 5}}, Category: [][]float32{{106, 107, 108}}, QueryRisk: [][]float32{{202}},
			QueryCategory: [][]float32{{308, 309, 310, 311}}, Hidden: [][]float32{{-5, -6}}},
	}
	if !reflect.DeepEqual(outs, want) {
		t.Errorf("SplitOutputs =\n%v\nwant\n%v", outs, want)
	}
	// Copies: the backend's buffers are reused.
	logits[0][0], hidden[0] = 42, 42
	if outs[0].Risk[0][0] != 0 || outs[0].Hidden[0][0] != -1 {
		t.Error("SplitOutputs kept a view of its input")
	}
	if outs := SplitOutputs([]int{2, 1}, logits, nil, 2); outs[1].Hidden != nil || outs[1].Risk[0][1] != 5 {
		t.Errorf("without hidden states: %+v", outs[1])
	}
	if outs := SplitOutputs([]int{0, 0}, [4][]float32{}, nil, 2); len(outs) != 2 || outs[0].Risk != nil {
		t.Errorf("no tokens: %+v", outs)
	}
}
