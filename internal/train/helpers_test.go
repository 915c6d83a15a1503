package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

var (
	modelsDir  string
	modelsOnce sync.Map // dtype -> *modelOnce
)

type modelOnce struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "train-test-models-")
	if err != nil {
		panic(err)
	}
	modelsDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// tinyModel returns a gen-model folder of the tiny preset (seed 1), written
// once per test binary and dtype.
func tinyModel(t testing.TB, dtype string) string {
	v, _ := modelsOnce.LoadOrStore(dtype, &modelOnce{})
	mo := v.(*modelOnce)
	mo.once.Do(func() {
		mo.dir = filepath.Join(modelsDir, "tiny-"+dtype)
		_, mo.err = synth.Generate(mo.dir, synth.Options{Preset: "tiny", DType: dtype, Seed: 1})
	})
	if mo.err != nil {
		t.Fatal(mo.err)
	}
	return mo.dir
}

// words make up the synthetic conversations: plain English words, so that
// each is one or two tokens and texts are short.
var words = strings.Fields(`the a of to and in is it you that he was for on are with as his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an each she which do their time
if will way about many then them write would like so these her long make thing see him two has look more day could go come
did number sound no most people my over know water than call first who may down side been now find any new work part take
get place made live where after back little only round man year came show every good me give our under name very through
just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell does set
three want air well also play small end put home read hand port large spell add even land here must big high such follow act
why ask men change went light kind off need house picture try us again animal point mother world near build self earth father`)

// randomConversation draws a conversation of random words: a user turn of
// userWords words, after a 4-word system turn when system is set, then an
// assistant turn of respWords words unless respWords is 0.
func randomConversation(r *rng, userWords, respWords int, system bool) []tokenizer.Message {
	text := func(n int) string {
		w := make([]string, n)
		for i := range w {
			w[i] = words[r.intn(len(words))]
		}
		return strings.Join(w, " ")
	}
	var msgs []tokenizer.Message
	if system {
		msgs = append(msgs, tokenizer.Message{Role: "system", Content: text(4)})
	}
	msgs = append(msgs, tokenizer.Message{Role: "user", Content: text(userWords)})
	if respWords > 0 {
		msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: text(respWords)})
	}
	return msgs
}

// plantedRule labels hidden states by a random linear rule: risk =
// argmax(U·x), category = argmax(V·x) where the risk is not Safe. The
// rows of U and V are orthogonal to the mean hidden state, so the classes
// are balanced although every hidden state shares a large common part; a
// rule without bias is exactly what a head can represent (its RMSNorm
// only rescales). Positions whose normalised top-two gap is below the
// margin stay unlabelled.
type plantedRule struct {
	H          int
	U, V       [][]float64
	riskMargin float64
	catMargin  float64
}

func newPlantedRule(seed uint64, H, levels, categories int, X []float32) *plantedRule {
	r := newRNG(seed, "planted rule")
	mean := make([]float64, H)
	rows := len(X) / H
	for i := range rows {
		for k := range H {
			mean[k] += float64(X[i*H+k]) / float64(rows)
		}
	}
	normalize(mean)
	draw := func(n int) [][]float64 {
		m := make([][]float64, n)
		for i := range m {
			m[i] = make([]float64, H)
			for k := range H {
				m[i][k] = float64(r.uniform())
			}
			d := dot(m[i], mean)
			for k := range H {
				m[i][k] -= d * mean[k]
			}
			normalize(m[i])
		}
		return m
	}
	return &plantedRule{H: H, U: draw(levels), V: draw(categories)}
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func normalize(v []float64) {
	n := math.Sqrt(dot(v, v))
	for i := range v {
		v[i] /= n
	}
}

// score returns the argmax of m·x/|x| and its gap to the runner-up.
func (p *plantedRule) score(m [][]float64, x []float32) (int, float64) {
	xs := make([]float64, len(x))
	for i, v := range x {
		xs[i] = float64(v)
	}
	normalize(xs)
	s := make([]float64, len(m))
	for i := range m {
		s[i] = dot(m[i], xs)
	}
	best := 0
	for i := range s {
		if s[i] > s[best] {
			best = i
		}
	}
	second := math.Inf(-1)
	for i := range s {
		if i != best {
			second = math.Max(second, s[i])
		}
	}
	return best, s[best] - second
}

// setMargins picks the margins as quantiles of the gaps over X, so that
// the share keep of positions is labelled on each head.
func (p *plantedRule) setMargins(X []float32, keep float64) {
	var rg, cg []float64
	for i := 0; i < len(X)/p.H; i++ {
		x := X[i*p.H : (i+1)*p.H]
		_, g := p.score(p.U, x)
		rg = append(rg, g)
		_, g = p.score(p.V, x)
		cg = append(cg, g)
	}
	slices.Sort(rg)
	slices.Sort(cg)
	q := int((1 - keep) * float64(len(rg)))
	p.riskMargin, p.catMargin = rg[q], cg[q]
}

// label returns the rule's label of x, or ok false inside the margin.
func (p *plantedRule) label(x []float32, tax Taxonomy) (risk, cat string, ok bool) {
	ri, rg := p.score(p.U, x)
	if rg < p.riskMargin {
		return "", "", false
	}
	if ri == 0 {
		return tax.Risk[0], "", true
	}
	ci, cg := p.score(p.V, x)
	if cg < p.catMargin {
		return "", "", false
	}
	return tax.Risk[ri], tax.Categories[ci], true
}

// corpus is a set of unlabelled conversations rendered once, with the
// hidden states of every position a label may use (placeholder labels on
// every prompt and response), extracted by the code train-heads runs.
type corpus struct {
	m         *guard.Model
	msgs      [][]tokenizer.Message
	exs       []*Example
	convs     []*Conversation
	positions [][]int
	rows      []exampleRows
	X         []float32
	H         int
	tokens    int // run through the backbone
}

func newCorpus(t testing.TB, m *guard.Model, convMsgs [][]tokenizer.Message) *corpus {
	return newCorpusProgress(t, m, convMsgs, nil)
}

func newCorpusProgress(t testing.TB, m *guard.Model, convMsgs [][]tokenizer.Message, progress Progress) *corpus {
	c := &corpus{m: m, msgs: convMsgs, exs: placeholderExamples(convMsgs), H: guardhook.Network(m).Hidden()}
	c.convs = make([]*Conversation, len(c.exs))
	for i, ex := range c.exs {
		conv, err := Render(guardhook.Tokenizer(m), ex.Messages)
		if err != nil {
			t.Fatal(err)
		}
		c.convs[i] = conv
	}
	c.positions, c.rows, _ = featurePlan(c.exs, c.convs)
	var err error
	if c.X, c.tokens, err = extract(modelBackbone(m), c.convs, c.positions, progress); err != nil {
		t.Fatal(err)
	}
	return c
}

// row is the hidden state of feature row r.
func (c *corpus) row(r int) []float32 { return c.X[r*c.H : (r+1)*c.H] }

// byPath splits the hidden states by path.
func (c *corpus) byPath() map[Path][]float32 {
	out := map[Path][]float32{}
	for i, r := range c.rows {
		out[Query] = append(out[Query], c.row(r.prompt)...)
		if r.response >= 0 {
			out[Response] = append(out[Response], c.X[r.response*c.H:(r.response+len(c.convs[i].ResponsePos))*c.H]...)
		}
	}
	return out
}

// plant labels the conversations by the rules. A conversation is kept
// only when its prompt is outside the margin and, if it has a response, at
// least one response token is; response tokens inside the margin get null
// labels. So a kept conversation asks for exactly the positions of its
// placeholder example, and primeCache can store its features. It returns
// the JSON lines and the indices of the kept conversations.
func (c *corpus) plant(t testing.TB, rules map[Path]*plantedRule, tax Taxonomy) ([]string, []int) {
	var lines []string
	var kept []int
	for i, msgs := range c.msgs {
		rec := map[string]any{"id": i, "messages": msgs}
		rk, cat, ok := rules[Query].label(c.row(c.rows[i].prompt), tax)
		if !ok {
			continue
		}
		l := map[string]string{"risk": rk}
		if cat != "" {
			l["category"] = cat
		}
		rec["prompt"] = l
		if c.rows[i].response >= 0 {
			n := len(c.convs[i].ResponsePos)
			risks, cats := make([]*string, n), make([]*string, n)
			labelledAny := false
			for tk := range n {
				if rk, cat, ok := rules[Response].label(c.row(c.rows[i].response+tk), tax); ok {
					risks[tk] = &rk
					if cat != "" {
						cats[tk] = &cat
					}
					labelledAny = true
				}
			}
			if !labelledAny {
				continue
			}
			rec["response"] = map[string]any{"token_risk": risks, "token_category": cats}
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
		kept = append(kept, i)
	}
	return lines, kept
}

// primeCache stores, under cacheDir, the feature cache entry train-heads
// will look up for a data file holding the conversations idx (as plant
// keeps them), from the hidden states already extracted: the extraction
// need not run twice.
func (c *corpus) primeCache(t testing.TB, modelDir, cacheDir string, idx []int) {
	var convs []*Conversation
	var positions [][]int
	var feats []float32
	total := 0
	for _, i := range idx {
		convs = append(convs, c.convs[i])
		positions = append(positions, c.positions[i])
		r := c.rows[i].prompt
		feats = append(feats, c.X[r*c.H:(r+len(c.positions[i]))*c.H]...)
		total += len(c.positions[i])
	}
	set, err := safetensors.OpenDir(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	key, err := backboneKey(set, guardhook.Network(c.m).Config, modelBackbone(c.m))
	if err != nil {
		t.Fatal(err)
	}
	if err := storeCache(cacheDir, featureKey(key, convs, positions), feats, total, c.H); err != nil {
		t.Fatal(err)
	}
}

// placeholderExamples labels every prompt and response, so that
// featurePlan asks for every position the planted labels may use.
func placeholderExamples(convMsgs [][]tokenizer.Message) []*Example {
	exs := make([]*Example, len(convMsgs))
	for i, msgs := range convMsgs {
		exs[i] = &Example{Line: i + 1, Messages: msgs, Prompt: &Label{Risk: "Safe"}}
		if msgs[len(msgs)-1].Role == "assistant" {
			exs[i].Response = &ResponseLabel{Risk: "Safe"}
		}
	}
	return exs
}

// plantRules draws one rule per path from that path's hidden states
// (each path's states have their own common part), keeping the share keep
// of positions outside the margins.
func plantRules(seed uint64, H int, tax Taxonomy, byPath map[Path][]float32, keep float64) map[Path]*plantedRule {
	rules := map[Path]*plantedRule{}
	for _, p := range Paths {
		r := newPlantedRule(seed+uint64(len(rules)), H, len(tax.Risk), len(tax.Categories), byPath[p])
		r.setMargins(byPath[p], keep)
		rules[p] = r
	}
	return rules
}

func writeLines(t testing.TB, path string, lines []string) {
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
