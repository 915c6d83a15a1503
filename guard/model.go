package guard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/hub"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Message is one chat turn. Role is "system" ("developer", OpenAI's newer
// name for it, is read as "system"), "user", "assistant" or "tool" (a tool
// call's result: a run of them is the user turn of <tool_response> blocks
// the chat template writes); ReasoningContent is an assistant turn's
// reasoning (the text of its think block), which the chat template keeps
// only for turns after the last user turn; ToolCalls are the calls an
// assistant turn makes after its content, written as the template writes
// them (their tags as the model's tokens for them); they are not read
// from or written to JSON, whose OpenAI form (an id, a type, a function
// object) is not theirs. All of the text is text: control tokens written
// in it stay text.
type Message struct {
	Role             string     `json:"role"`
	Content          string     `json:"content"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"-"`
}

// ToolCall is one call of an assistant turn: the tool's name and its
// arguments as JSON text (written as they are: the \uXXXX escapes of a
// request decoded first, as the model reads them, is the caller's choice).
type ToolCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func chatMessages(msgs []Message) []tokenizer.Message {
	out := make([]tokenizer.Message, len(msgs))
	for i, m := range msgs {
		if m.Role == "developer" {
			m.Role = "system"
		}
		out[i] = tokenizer.Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent,
			ToolCalls: convertCalls[tokenizer.ToolCall](m.ToolCalls)}
	}
	return out
}

// fromChat is chatMessages the other way (developer stays system).
func fromChat(msgs []tokenizer.Message) []Message {
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		out[i] = Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent,
			ToolCalls: convertCalls[ToolCall](m.ToolCalls)}
	}
	return out
}

// toolCall is the shape ToolCall and tokenizer.ToolCall share.
type toolCall interface {
	~struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
}

// convertCalls converts tool calls between guard's type and the
// tokenizer's (nil for none).
func convertCalls[To, From toolCall](calls []From) []To {
	if len(calls) == 0 {
		return nil
	}
	out := make([]To, len(calls))
	for i, c := range calls {
		out[i] = To(c)
	}
	return out
}

// Options configure Load.
type Options struct {
	// Threads is the number of goroutines the matrix kernels use; 0 keeps
	// the default (GOMAXPROCS). It is process-wide. Load refuses a negative
	// number or one over 1024.
	Threads int
	// Policy is the default policy of new streams.
	Policy Policy
	// Tokenizer is a tokenizer.json path (or a folder holding one). Empty
	// means the model folder's tokenizer.json when present, else the
	// embedded Qwen3 tokenizer.
	Tokenizer string
	// Int4Coarse runs INT4 (AWQ) projections on one int8 row of
	// activations per token instead of an int8 row plus its int8 residual:
	// roughly half the integer work of prefill and batched steps, with
	// activations accurate to about 1/254 of their group's largest value
	// (what llama.cpp's 8-bit activations give) instead of about 1.6e-5.
	// Verdicts can then differ from the float model's near decision
	// boundaries. Ignored for float models.
	Int4Coarse bool
	// Device is where the network runs: "cpu" (the default, also ""),
	// "cuda" or "cuda:N" (a GPU, an error when it cannot take the model),
	// or "auto" (a GPU when one can, else the CPU; Info says which and
	// why). A GPU needs a build with the cuda tag; it runs BF16 and AWQ
	// INT4 models. A model bound for a GPU is not repacked for the CPU
	// kernels: the upload lays it out from the checkpoint's tensors (auto
	// loads it again for the CPU if no GPU takes it).
	Device string
	// KVCache is how the CPU engine's streams store their keys and values:
	// "bf16" (the default when empty: half the memory of float32, each
	// element within 2⁻⁹ of it), "int8" (about a quarter: int8 codes with
	// one scale per head and position; attention scores them against the
	// query's own int8 codes, docs/KVCACHE.md), "int4" (about an eighth:
	// each head vector rotated and stored as 4-bit codes with one scale;
	// the fastest at long contexts and the least accurate, docs/KVCACHE.md
	// states how much) or "f32" (exact). Info's
	// KVBytesPerToken follows it. In every type a stream's verdicts do not
	// depend on how its tokens were chunked or what it was batched with.
	KVCache string
	// RepackCache is where an AWQ model's weights, repacked for the CPU
	// kernels, are kept between loads: a load maps that file (after
	// checking it is the one for these weights, see Info.RepackCache)
	// instead of repacking, which takes most of an AWQ load. "" or "auto":
	// a .streamguard folder in the model's folder (not when that is a
	// symbolic link, which would have the load write where the folder's
	// author chose), else (a read-only model) the user's cache folder;
	// "off": repack on every load, write
	// nothing; else a folder that holds one subfolder per model.
	RepackCache string
}

// Model is a loaded guard model. It is safe for concurrent use, Close
// included. Models come from Load: the zero Model is not usable, and its
// methods return errors (or zero values), as a nil *Model's do.
type Model struct {
	net *qwen3.Model
	eng engine
	// deviceNote says why Device "auto" runs on the CPU.
	deviceNote string
	tok        *tokenizer.Tokenizer
	closer     interface{ Close() error }
	policy     Policy
	// scaffold is the chat scaffold's ids, written only by the stream.
	scaffold scaffold

	unsafeIdx, contIdx           int // response risk labels
	queryUnsafeIdx, queryContIdx int
	loadTime                     time.Duration
	repack                       RepackUse // Info.RepackCache

	// run is held for reading by each forward and for writing by Close:
	// a forward reads weights that Close unmaps (a fault no recover
	// catches), so Close waits for the forwards under way, and a forward
	// that would start after it sees closed instead.
	run    sync.RWMutex
	closed atomic.Bool // read without run by the calls that only queue
}

// ErrModelClosed is wrapped by the error of every call that would run a
// model after its Close: Step, Moderate, and a stream's Judge, Append and
// Queue calls, on streams opened before the Close or after it. It is not
// ErrClosed, which says the stream was closed: a server that reloads its
// model can tell "retry on the new model" from its own mistake.
var ErrModelClosed = errors.New("guard: model is closed")

// errNotLoaded is the error of a zero (or nil) Model's calls.
var errNotLoaded = errors.New("guard: the model is not loaded: a zero Model is not usable; models come from Load")

// usable is nil, or why m cannot run: not loaded, or closed.
func (m *Model) usable() error {
	switch {
	case m == nil || m.net == nil:
		return errNotLoaded
	case m.closed.Load():
		return ErrModelClosed
	}
	return nil
}

// Load opens a model: dir is a model folder, or a Hugging Face hub id
// (ORG/NAME[@REV], such as "Qwen/Qwen3Guard-Stream-0.6B") found in the
// local hub cache (HF_HUB_CACHE, HF_HOME, else ~/.cache/huggingface/hub,
// where `streamguard pull` puts it). Load never downloads: an id that the
// cache lacks is an error naming the command that fetches it.
//
// From the folder, Load reads config.json, the safetensors weights
// (memory-mapped, kept in their stored dtype; AWQ INT4 projections are
// repacked for the CPU's integer kernels unless Device sends the model to a
// GPU) and a tokenizer. It refuses an
// incomplete or inconsistent model: a config that is not a complete guard
// config, any missing, mis-shaped or unused tensor, a tokenizer whose
// vocabulary or special tokens do not match the model. ctx is checked
// between the loading stages (report, tokenizer, weights); a cancelled load
// returns an error wrapping ctx.Err() and holds nothing open.
func Load(ctx context.Context, dir string, opts Options) (*Model, error) {
	return load(ctx, dir, opts, false)
}

// load is Load; with forUpload the network is loaded for a GPU backend
// that the caller runs itself (guardhook.LoadForUpload), whatever
// opts.Device says, and the model's own engine is the CPU's, which refuses
// to run it.
func load(ctx context.Context, dir string, opts Options, forUpload bool) (*Model, error) {
	start := time.Now()
	if err := loadCanceled(ctx, dir); err != nil {
		return nil, err
	}
	if opts.Threads < 0 || opts.Threads > kernels.MaxThreads {
		return nil, fmt.Errorf("guard: Options.Threads %d: want 0 (GOMAXPROCS) to %d", opts.Threads, kernels.MaxThreads)
	}
	kv := qwen3.KVBF16
	if opts.KVCache != "" {
		var err error
		if kv, err = qwen3.ParseKVType(opts.KVCache); err != nil {
			return nil, fmt.Errorf("guard: Options.KVCache: %w", err)
		}
	}
	kind, _, err := parseDevice(opts.Device)
	if err != nil {
		return nil, err
	}
	if kind == "cuda" && newGPUEngine == nil {
		// Said before the load, which would be wasted.
		return nil, fmt.Errorf("guard: device %s: %s", opts.Device, errNoCUDABuild)
	}
	dir, err = modelFolder(dir)
	if err != nil {
		return nil, err
	}
	if err := checkFolder(dir, opts.Tokenizer != ""); err != nil {
		return nil, err
	}
	// The tokenizer parses while the weights map: neither needs the
	// other until both are checked together.
	type tokResult struct {
		tok *tokenizer.Tokenizer
		err error
	}
	tokc := make(chan tokResult, 1)
	go func() {
		tok, err := loadTokenizer(dir, opts.Tokenizer)
		tokc <- tokResult{tok, err}
	}()
	// A network bound for a GPU needs no CPU copy of its AWQ weights (the
	// GPU lays them out from the checkpoint's tensors): with a device other
	// than the CPU in a cuda build, load it for upload, and load it again
	// for the CPU if auto falls back there.
	open := func(uploadOnly bool) (*qwen3.Model, *qwen3.Weights, error) {
		net, set, err := qwen3.OpenFolder(dir, qwen3.Options{KVCache: kv, RepackCache: repackPaths(dir, opts.RepackCache), UploadOnly: uploadOnly})
		if err == nil {
			net.SetInt4Coarse(opts.Int4Coarse)
		}
		return net, set, err
	}
	net, set, err := open(forUpload || kind != "cpu" && newGPUEngine != nil)
	tr := <-tokc
	if tr.err != nil {
		if err == nil {
			set.Close()
		}
		return nil, fmt.Errorf("guard: %w", tr.err)
	}
	if err != nil {
		return nil, fmt.Errorf("guard: %s: %w", dir, err)
	}
	tok := tr.tok
	if err := loadCanceled(ctx, dir); err != nil {
		set.Close()
		return nil, err
	}
	m, err := newModel(net, tok, opts)
	if err != nil {
		set.Close()
		return nil, err
	}
	if _, cpu := m.eng.(cpuEngine); cpu && net.UploadOnly() && !forUpload {
		set.Close()
		if net, set, err = open(false); err != nil {
			return nil, fmt.Errorf("guard: %s: %w", dir, err)
		}
		// The levels as newModel named them in the first load.
		if err := checkRiskLevels(net.Labels); err != nil {
			set.Close()
			return nil, err
		}
		m.net, m.eng = net, cpuEngine{net}
	}
	m.closer = set
	m.repack = RepackUse(set.Repack)
	// Loading leaves garbage (the tokenizer file, parse tables, repacking
	// buffers) that the runtime would hand back to the system only
	// gradually; a model is loaded once and then serves, so return it now.
	debug.FreeOSMemory()
	m.loadTime = time.Since(start)
	return m, nil
}

// modelFolder is dir itself when it exists (or looks like a path), else the
// cached snapshot of the hub id it spells.
func modelFolder(dir string) (string, error) {
	_, err := os.Stat(dir)
	switch {
	case err == nil:
		return dir, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("guard: %w", err)
	case hub.LooksLikePath(dir) || !hub.IsRepoID(dir):
		return "", &notExistError{msg: "guard: no such model folder: " + dir}
	}
	ref, err := hub.ParseRef(dir)
	if err != nil {
		return "", fmt.Errorf("guard: %w", err)
	}
	snap, err := hub.NewClient(hub.EnvFromOS()).Cached(ref)
	switch {
	case errors.Is(err, hub.ErrNotCached):
		// Whatever the cache lacks (the repo, the revision, a complete
		// snapshot), Load has no model there to open.
		return "", &notExistError{msg: fmt.Sprintf("guard: no folder %s; %v", dir, err), err: err}
	case err != nil:
		return "", fmt.Errorf("guard: %s: %w", dir, err) // a damaged cache is not a missing model
	}
	return snap.Dir, nil
}

// notExistError is a model Load finds nowhere: errors.Is(err,
// fs.ErrNotExist) holds, as for a missing file, so that a caller can branch
// on it; err is the cause, when there is one.
type notExistError struct {
	msg string
	err error
}

func (e *notExistError) Error() string { return e.msg }

func (e *notExistError) Unwrap() []error {
	if e.err == nil {
		return []error{fs.ErrNotExist}
	}
	return []error{fs.ErrNotExist, e.err}
}

func loadCanceled(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("guard: loading %s: %w", dir, err)
	}
	return nil
}

// checkFolder runs the strict load report (the one `streamguard verify`
// prints) and refuses a folder with any problem. With ownTokenizer the
// tokenizer files may be absent from the folder.
func checkFolder(dir string, ownTokenizer bool) error {
	r, err := checkpoint.Report(dir)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	var problems []string
	if r.Diagnosis != "" {
		problems = append(problems, r.Diagnosis)
	}
	for _, p := range r.Problems {
		if ownTokenizer && slices.ContainsFunc(checkpoint.TokenizerFiles, func(f string) bool { return strings.HasPrefix(p, f+" ") }) {
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) == 0 && !r.Guard {
		problems = append(problems, "not a Qwen3Guard-Stream model")
	}
	if len(problems) > 0 {
		return fmt.Errorf("guard: %s is not a complete Qwen3Guard-Stream model (streamguard verify %s shows the full report): %s",
			dir, dir, strings.Join(problems, "; "))
	}
	return nil
}

func init() {
	guardhook.Register(guardhook.Hooks{
		Network:   func(m any) *qwen3.Model { return m.(*Model).net },
		Tokenizer: func(m any) *tokenizer.Tokenizer { return m.(*Model).tok },
		New: func(net *qwen3.Model, tok *tokenizer.Tokenizer, opts any) (any, error) {
			return wrap(net, tok, opts.(Options))
		},
		ParseDevice: parseDevice,
		Messages:    func(msgs []tokenizer.Message) any { return fromChat(msgs) },
		ChatMessages: func(msgs any) []tokenizer.Message {
			return chatMessages(msgs.([]Message))
		},
		Forward: func(m any, ids [][]int) ([]qwen3.Output, error) {
			return m.(*Model).forwardFresh(ids)
		},
		LoadForUpload: func(ctx context.Context, dir string, opts any) (any, error) {
			o := opts.(Options)
			o.Device = "cpu"
			return load(ctx, dir, o, true)
		},
		Weights: func(m any) *qwen3.Weights {
			w, _ := m.(*Model).closer.(*qwen3.Weights)
			return w
		},
		HeldOverrun: func(err error) bool {
			var h *heldOverrun
			return errors.As(err, &h)
		},
	})
}

// wrap builds a Model around a network held in memory (random weights for
// tests and benchmarks); tok nil means the embedded Qwen3 tokenizer.
func wrap(net *qwen3.Model, tok *tokenizer.Tokenizer, opts Options) (*Model, error) {
	if tok == nil {
		var err error
		if tok, err = tokenizer.LoadQwen3(); err != nil {
			return nil, err
		}
	}
	return newModel(net, tok, opts)
}

func newModel(net *qwen3.Model, tok *tokenizer.Tokenizer, opts Options) (*Model, error) {
	if err := checkpoint.CheckTokenizer(tok, net.VocabSize()); err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	l := net.Labels
	if err := checkRiskLevels(l); err != nil {
		return nil, err
	}
	policy := opts.Policy.clone() // what is checked is what is kept
	if err := policy.check(l.ResponseCategory, l.QueryCategory); err != nil {
		return nil, err
	}
	sc, err := newScaffold(tok)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	eng, note, err := chooseEngine(net, opts.Device)
	if err != nil {
		return nil, err
	}
	if opts.Threads > 0 {
		kernels.SetThreads(opts.Threads)
	}
	return &Model{
		net: net, eng: eng, deviceNote: note, tok: tok, policy: policy, scaffold: sc,
		unsafeIdx: indexOf(l.ResponseRisk, Unsafe), contIdx: indexOf(l.ResponseRisk, Controversial),
		queryUnsafeIdx: indexOf(l.QueryRisk, Unsafe), queryContIdx: indexOf(l.QueryRisk, Controversial),
	}, nil
}

// checkRiskLevels makes each risk level map (config.json's
// response_risk_level_map and query_risk_level_map) the three levels the
// policies know, Safe (index 0), Unsafe and Controversial, or
// refuses it. The policies find Unsafe and Controversial by name: under a
// name they do not know, a threshold would score P(Unsafe) as 0 and pass
// every verdict. A level spelled in another case or with spaces around it
// ("unsafe") is the same level — the model's card does not fix the
// spelling — and is renamed in place, so that Verdict.Risk is always one
// of the exported names; anything else (a missing, repeated or fourth
// level) refuses the model at load.
func checkRiskLevels(l *config.Labels) error {
	for _, m := range []struct {
		field string
		risk  []string
	}{{"response_risk_level_map", l.ResponseRisk}, {"query_risk_level_map", l.QueryRisk}} {
		if err := canonicalLevels(m.field, m.risk); err != nil {
			return err
		}
	}
	return nil
}

// canonicalLevels is checkRiskLevels for one map.
func canonicalLevels(field string, risk []string) error {
	for i, r := range risk {
		for _, name := range []string{Safe, Unsafe, Controversial} {
			if strings.EqualFold(strings.TrimSpace(r), name) {
				risk[i] = name
			}
		}
	}
	ok := len(risk) == 3 && risk[0] == Safe && slices.Contains(risk, Unsafe) && slices.Contains(risk, Controversial)
	if !ok {
		return fmt.Errorf("guard: config.json's %s names the levels %q: want %q (index 0), %q and %q, which the policies read by name",
			field, risk, Safe, Unsafe, Controversial)
	}
	return nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func loadTokenizer(dir, path string) (*tokenizer.Tokenizer, error) {
	if path != "" {
		return tokenizer.Load(path)
	}
	// The usual case is the stock Qwen3 tokenizer: tokenizer.Load hashes
	// it and shares the copy every model in the process uses.
	t, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return tokenizer.LoadQwen3()
	}
	return t, err
}

// Close releases the weights. It waits for the forwards under way (a Step,
// or the chunk a synchronous call is feeding) to end, so it may be called
// while other goroutines use the model; afterwards every call that would
// run the model fails with an error wrapping ErrModelClosed, on streams
// opened before or after, and nothing reads the released weights. Streams
// need not be closed first, and their other methods (Close, Decision, ...)
// still work. Close is idempotent: later calls return nil, as does Close on
// a nil or zero Model.
func (m *Model) Close() error {
	if m == nil {
		return nil
	}
	m.run.Lock()
	defer m.run.Unlock()
	if m.closed.Swap(true) {
		return nil
	}
	var err error
	if m.eng != nil {
		err = m.eng.close()
	}
	if m.closer != nil {
		if cerr := m.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Info describes a loaded model.
type Info struct {
	Layers, Hidden, VocabSize, MaxPositions int
	// KVBytesPerToken is the cache memory one stream position costs, and
	// KVCache how the caches store keys and values ("bf16", "int8",
	// "int4", "f32"; a GPU's cache is "bf16" whatever Options.KVCache
	// says).
	KVBytesPerToken int64
	KVCache         string
	// KVCapacityBytes is the cache memory all streams together can hold
	// on this device: 0 on the CPU (caches grow as needed), the size of
	// the preallocated pool on a GPU. A server's KV budget must not exceed
	// it.
	KVCapacityBytes int64
	LoadTime        time.Duration
	Labels          Labels
	// Device is where the network runs ("cpu", "cuda:0 (NVIDIA ...)"), and
	// DeviceNote, for Options.Device "auto" on the CPU, why no GPU was used.
	Device, DeviceNote string
	// RepackCache says how the load used Options.RepackCache; it is the
	// zero value for models with nothing to repack and models built in
	// memory.
	RepackCache RepackUse
}

// Labels are the model's label names, in the order of its heads' outputs:
// the risk levels and categories of response tokens and of user turns.
type Labels struct {
	ResponseRisk     []string
	ResponseCategory []string
	QueryRisk        []string
	QueryCategory    []string
}

// Info describes the model, closed or not; a zero Model's is the zero Info.
func (m *Model) Info() Info {
	if m == nil || m.net == nil {
		return Info{}
	}
	l := m.net.Labels
	return Info{
		Layers: len(m.net.Layers), Hidden: m.net.Hidden(), VocabSize: m.net.VocabSize(),
		MaxPositions: m.net.MaxPositions, KVBytesPerToken: m.eng.bytesPerPosition(), KVCache: m.eng.kvType(), KVCapacityBytes: m.eng.capacityBytes(),
		Device: m.eng.device(), DeviceNote: m.deviceNote, RepackCache: m.repack,
		LoadTime: m.loadTime, Labels: Labels{
			ResponseRisk: slices.Clone(l.ResponseRisk), ResponseCategory: slices.Clone(l.ResponseCategory),
			QueryRisk: slices.Clone(l.QueryRisk), QueryCategory: slices.Clone(l.QueryCategory),
		},
	}
}

// Policy is the default policy of new streams: a copy, which the caller
// may edit and give to Stream.SetPolicy.
func (m *Model) Policy() Policy {
	if m == nil {
		return Policy{}
	}
	return m.policy.clone()
}
