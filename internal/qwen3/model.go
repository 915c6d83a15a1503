package qwen3

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/kernels"
)

// Model is a loaded Qwen3Guard-Stream model. It is immutable after Load and
// safe for concurrent use; each sequence's state lives in its own [Cache].
type Model struct {
	Config *config.Config
	Labels *config.Labels

	Embed    Embedding
	Layers   []*Layer
	Norm     *RMSNorm // model.norm, applied before the heads
	Response *Head    // risk_level_category_* : read on response tokens
	Query    *Head    // query_risk_level_category_* : read at a prompt's <|im_end|>
	RoPE     *RoPE

	// MaxPositions is the longest sequence a cache may hold
	// (max_position_embeddings).
	MaxPositions int

	hidden, qDim, kvDim, inter, guardInner int
	kv                                     KVType // of the caches NewCache returns

	pool sync.Pool // *workspace

	uploadOnly bool // Options.UploadOnly: AWQ projections not repacked
}

// Options customise how weights are read.
type Options struct {
	// Linear loads each projection; nil means [DenseLinear] (the stored
	// dtype, zero-copy). Quantized formats plug in here.
	Linear LinearLoader
	// Embedding loads the token embedding; nil means [LoadDenseEmbedding].
	Embedding EmbeddingLoader
	// AllowUnused accepts tensors that no loader read. By default Load
	// refuses them: a weight silently ignored is a wrong model.
	AllowUnused bool
	// KVCache is the type of the caches NewCache returns; the zero value
	// is the exact float32 cache (guard.Load defaults to bfloat16).
	KVCache KVType
	// RepackCache, for an AWQ folder loaded by OpenFolder, are the paths
	// of its repacked-weights file, tried in order: the first that holds
	// the current repacked projections (see package packfile) is mapped
	// instead of repacking; when none does, the projections are repacked
	// and written to the first path that can be written. Empty: repack,
	// write nothing.
	RepackCache []string
	// UploadOnly, for an AWQ folder loaded by OpenFolder, reads and checks
	// every tensor but leaves the quantized projections in the
	// checkpoint's tensors instead of repacking them for the CPU kernels,
	// and maps or writes no repacked-weights file: for a model that a GPU
	// backend uploads (it lays the weights out its own way, from
	// AWQLinear.Source). Such a model's CPU forward returns an error.
	UploadOnly bool
}

// Load builds the model described by cfg from src. It checks the config,
// the presence and shape of every tensor, and (when src can list its
// tensors) that no tensor is left unused, and reports all problems found.
func Load(src Source, cfg *config.Config, opts Options) (*Model, error) {
	if err := cfg.Validate(true); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	labels, err := cfg.Labels()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	linear := opts.Linear
	if linear == nil {
		linear = DenseLinear
	}
	embed := opts.Embedding
	if embed == nil {
		embed = LoadDenseEmbedding
	}
	ts := &trackingSource{Source: src, used: map[string]bool{}}
	H, hd := cfg.HiddenSize, cfg.HeadDim
	eps := float32(cfg.RMSNormEps)
	m := &Model{
		Config: cfg, Labels: labels, MaxPositions: cfg.MaxPositionEmbeddings,
		hidden: H, qDim: cfg.NumAttentionHeads * hd, kvDim: cfg.NumKeyValueHeads * hd,
		inter: cfg.IntermediateSize, guardInner: cfg.GuardInnerSize, kv: opts.KVCache,
	}
	if opts.KVCache > KVInt4 {
		return nil, fmt.Errorf("unknown KV-cache type %v", opts.KVCache)
	}
	if opts.KVCache == KVInt4 && !kernels.ValidInt4Dim(hd) {
		return nil, fmt.Errorf("KV-cache type int4 needs head_dim a power of two up to 1024; this model has %d", hd)
	}

	var errs []error
	lin := func(prefix string, out, in int) Linear {
		l, err := linear(ts, prefix, out, in)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if o, i := l.Dims(); o != out || i != in {
			errs = append(errs, fmt.Errorf("%s: loader built a %d×%d projection, want %d×%d", prefix, o, i, out, in))
		}
		return l
	}
	norm := func(name string, dim int) *RMSNorm {
		n, err := loadNorm(ts, name, dim, eps)
		if err != nil {
			errs = append(errs, err)
		}
		return n
	}

	if m.Embed, err = embed(ts, "model.embed_tokens.weight", cfg.VocabSize, H); err != nil {
		errs = append(errs, err)
	}
	for i := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", i)
		m.Layers = append(m.Layers, &Layer{
			AttnNorm: norm(p+"input_layernorm.weight", H),
			Attn: &Attention{
				Q:     lin(p+"self_attn.q_proj", m.qDim, H),
				K:     lin(p+"self_attn.k_proj", m.kvDim, H),
				V:     lin(p+"self_attn.v_proj", m.kvDim, H),
				O:     lin(p+"self_attn.o_proj", H, m.qDim),
				QNorm: norm(p+"self_attn.q_norm.weight", hd),
				KNorm: norm(p+"self_attn.k_norm.weight", hd),
				Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads, HeadDim: hd,
			},
			MLPNorm: norm(p+"post_attention_layernorm.weight", H),
			MLP: &MLP{
				Gate:  lin(p+"mlp.gate_proj", m.inter, H),
				Up:    lin(p+"mlp.up_proj", m.inter, H),
				Down:  lin(p+"mlp.down_proj", H, m.inter),
				Inter: m.inter,
			},
		})
	}
	m.Norm = norm("model.norm.weight", H)
	G := cfg.GuardInnerSize
	head := func(prefix, riskName, catName string, levels, cats int) *Head {
		return &Head{
			Pre:      lin(prefix+"_pre", G, H),
			Norm:     norm(prefix+"_layernorm.weight", G),
			Risk:     lin(riskName, levels, G),
			Category: lin(catName, cats, G),
		}
	}
	m.Response = head("risk_level_category", "risk_level_head", "category_head",
		len(labels.ResponseRisk), len(labels.ResponseCategory))
	m.Query = head("query_risk_level_category", "query_risk_level_head", "query_category_head",
		len(labels.QueryRisk), len(labels.QueryCategory))

	if len(errs) == 0 && !opts.AllowUnused {
		if unused := ts.unused(); len(unused) > 0 {
			more := ""
			if len(unused) > 8 {
				more = fmt.Sprintf(" and %d more", len(unused)-8)
				unused = unused[:8]
			}
			errs = append(errs, fmt.Errorf("tensors not used by a Qwen3Guard-Stream model: %s%s", strings.Join(unused, ", "), more))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if m.uploadOnly = opts.UploadOnly; !m.uploadOnly {
		if err := fuseProjections(m); err != nil {
			return nil, err
		}
	}
	m.RoPE = NewRoPE(hd, m.MaxPositions, cfg.RopeTheta)
	return m, nil
}

// UploadOnly reports whether the model was loaded for a GPU backend only
// (Options.UploadOnly): its AWQ projections hold no CPU weights.
func (m *Model) UploadOnly() bool { return m.uploadOnly }

// errUploadOnly is the CPU forward's answer on a model loaded for upload.
var errUploadOnly = errors.New("qwen3: model loaded for a GPU (Options.UploadOnly): its AWQ projections are not repacked for the CPU kernels")

// Hidden is the hidden size.
func (m *Model) Hidden() int { return m.hidden }

// VocabSize is the number of embedding rows; valid token ids are below it.
func (m *Model) VocabSize() int { return m.Embed.Rows() }
