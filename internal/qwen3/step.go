package qwen3

// The Qwen3Guard-Stream forward, written once. A backend — the CPU engine
// in this package (cpuops.go), the GPU in package gpu — implements [Ops]
// over its own memory and kernels; [RunStep] says what runs in which
// order. The backends differ in how they lay activations out, which
// projections they fuse and how they batch attention, never in the
// network they compute.

// Act names an activation of one forward step of T tokens. Each backend
// keeps its own memory for each; only the forward's order of operations
// is shared.
type Act int

const (
	ActHidden Act = iota // the residual stream [T][hidden]
	ActNormed            // a norm's output [T][hidden]
	ActQKV               // q, k and v of ActNormed, in the backend's layout
	ActAttn              // the attention output [T][heads·head_dim]
	ActGateUp            // gate and up of ActNormed, in the backend's layout
	ActMLP               // silu(gate)·up [T][intermediate]
	ActOut               // a block's output kept apart from the residual (LayerRunner)
	ActPre               // a guard head's inner projection [T][guard_inner]
	// ActLogits+i, i < 4: the logits [T][classes] of LogitTensors[i].
	ActLogits
)

// Tensor names one weight of a layer or of the model.
type Tensor int

const (
	AttnNorm   Tensor = iota // input_layernorm
	QKVProj                  // q_proj, k_proj and v_proj (however the backend holds them)
	OProj                    // o_proj
	MLPNorm                  // post_attention_layernorm
	GateUpProj               // gate_proj and up_proj
	DownProj                 // down_proj
	FinalNorm                // model.norm
	// A guard head pair's weights; Weight.Layer is the pair (HeadResponse,
	// HeadQuery).
	HeadPre  // *_pre
	HeadNorm // *_layernorm
	HeadRisk
	HeadCategory
)

// The guard head pairs, in the order of their logits.
const (
	HeadResponse = iota // risk_level_category_*, read on response tokens
	HeadQuery           // query_risk_level_category_*, read at a prompt's end
)

// Weight is Tensor of decoder layer Layer, or of head pair Layer for the
// head tensors; Layer is unused for FinalNorm.
type Weight struct {
	Layer  int
	Tensor Tensor
}

// LogitTensors are the four classifiers in the order of ActLogits:
// response risk, response category, query risk, query category.
var LogitTensors = [4]Weight{{HeadResponse, HeadRisk}, {HeadResponse, HeadCategory}, {HeadQuery, HeadRisk}, {HeadQuery, HeadCategory}}

// Ops are the operations of a forward step over the T tokens of a batch,
// each over all T rows. Every row's results must depend on that row (and,
// in Attend, its own sequence's cache) alone, so that a stream's outputs do
// not depend on what it is batched with.
type Ops interface {
	// Embed writes the batch's token embeddings into dst.
	Embed(dst Act)
	// Norm writes RMSNorm(x)·w into dst, row by row; dst may be x.
	Norm(dst, x Act, w Weight)
	// Project writes the product of w and x into dst, or adds it to dst
	// when accumulate is set. For QKVProj and GateUpProj dst is ActQKV
	// or ActGateUp, in whatever layout the backend's Attend and SiLUMul
	// read.
	Project(dst, x Act, w Weight, accumulate bool)
	// Attend takes layer's q, k and v from qkv: the per-head RMSNorm and
	// RoPE of q and k, k and v stored in each row's cache at the row's
	// position, then causal grouped-query attention of each row over its
	// sequence's cache up to and including the row, written into dst.
	Attend(layer int, dst, qkv Act)
	// SiLUMul writes silu(gate)·up of layer's gateUp into dst.
	SiLUMul(layer int, dst, gateUp Act)
}

// RunStep runs the forward of one batch through a model of the given
// number of decoder layers: embeddings, the layers, the final norm and the
// eight guard heads, whose logits it leaves in ActLogits…ActLogits+3.
func RunStep(ops Ops, layers int) {
	ops.Embed(ActHidden)
	for i := range layers {
		layerStep(ops, i)
	}
	headsStep(ops)
}

// layerStep is one pre-norm decoder block over the residual stream:
// h += Attn(RMSNorm_in(h)); h += MLP(RMSNorm_post(h)).
func layerStep(ops Ops, i int) {
	ops.Norm(ActNormed, ActHidden, Weight{i, AttnNorm})
	attentionStep(ops, i, ActHidden, true)
	ops.Norm(ActNormed, ActHidden, Weight{i, MLPNorm})
	mlpStep(ops, i, ActHidden, true)
}

// attentionStep is self-attention on ActNormed; its output (after o_proj)
// goes to dst, added when accumulate is set.
func attentionStep(ops Ops, i int, dst Act, accumulate bool) {
	ops.Project(ActQKV, ActNormed, Weight{i, QKVProj}, false)
	ops.Attend(i, ActAttn, ActQKV)
	ops.Project(dst, ActAttn, Weight{i, OProj}, accumulate)
}

// mlpStep is the SwiGLU feed-forward block on ActNormed:
// down(silu(gate(x))·up(x)) to dst, added when accumulate is set.
func mlpStep(ops Ops, i int, dst Act, accumulate bool) {
	ops.Project(ActGateUp, ActNormed, Weight{i, GateUpProj}, false)
	ops.SiLUMul(i, ActMLP, ActGateUp)
	ops.Project(dst, ActMLP, Weight{i, DownProj}, accumulate)
}

// headsStep normalises the residual stream in place (model.norm) and runs
// each guard head pair on it: a projection to guard_inner_size, an
// RMSNorm, then the risk and category classifiers.
func headsStep(ops Ops) {
	ops.Norm(ActHidden, ActHidden, Weight{Tensor: FinalNorm})
	for p := range 2 {
		ops.Project(ActPre, ActHidden, Weight{p, HeadPre}, false)
		ops.Norm(ActPre, ActPre, Weight{p, HeadNorm})
		for i, w := range LogitTensors {
			if w.Layer == p {
				ops.Project(ActLogits+Act(i), ActPre, w, false)
			}
		}
	}
}
