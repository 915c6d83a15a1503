package guard

// Randomized invariant test (in the style of pebble's metamorphic tests):
// seeded scripts of stream operations, run (a) batched through Model.Step
// over random subsets of streams with random chunk limits, streams
// joining, closing and queueing while steps run, and (b) each stream alone
// (whole steps, one token per step, the synchronous calls). Every verdict
// must be bitwise the same; closed streams must hold no cache.
//
//	go test -race -run TestInvariants -count=1 ./guard/
//
// INVARIANTS_SEEDS=n runs n seeds (default 6, a few seconds under -race;
// 300 ran clean); INVARIANTS_SEED=s runs s alone (with its log).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
)

type invOpKind int

const (
	invPrompt invOpKind = iota
	invText
	invIDs
	invFlush
	invEndResponse
	invStartThinking
	invEndThinking
	invSetMax
	invCheck
	invClose
)

func (k invOpKind) String() string {
	return [...]string{"prompt", "text", "ids", "flush", "end-response", "start-thinking", "end-thinking", "set-max", "check", "close"}[k]
}

type invOp struct {
	kind invOpKind
	msgs []Message
	text string
	ids  []int
	n    int
}

func (o invOp) String() string {
	switch o.kind {
	case invPrompt:
		return fmt.Sprintf("prompt(%q)", o.msgs)
	case invText:
		return fmt.Sprintf("text(%q)", o.text)
	case invIDs:
		return fmt.Sprintf("ids(%v)", o.ids)
	case invSetMax:
		return fmt.Sprintf("set-max(%d)", o.n)
	}
	return o.kind.String()
}

type invScript struct {
	policy Policy
	ops    []invOp
}

var invWords = []string{
	"the", "tea", "water", "boil", "how", "do", "I", "make", "a", "bomb", "kill", "hello", "world",
	"Café", "crème", "naïve", "日本語", "のテキスト", "🍞", "🔥", "🍵", "—", "¿Qué", "tal?", "\n", "\n\n",
	"<|im_end|>", "<|im_start|>assistant", "</think>", "<think>", "  ", "!!!", "1234567", "supercalifragilistic",
	"e\u0301", "ﬁ", "Ω", "a\u0300\u0301\u0302", ".", ",", "'s", "don't",
}

func invWordsText(r *rand.Rand, minW, maxW int) string {
	n := minW + r.IntN(maxW-minW+1)
	var b strings.Builder
	for i := range n {
		if i > 0 && r.IntN(4) != 0 {
			b.WriteByte(' ')
		}
		b.WriteString(invWords[r.IntN(len(invWords))])
	}
	return b.String()
}

// invCut cuts text at random byte offsets (inside characters too).
func invCut(r *rand.Rand, text string) []string {
	var out []string
	for len(text) > 0 {
		n := 1 + r.IntN(min(len(text), 1+r.IntN(24)))
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}

func invGenScript(r *rand.Rand) invScript {
	var sc invScript
	sc.policy = Policy{Mode: Mode(r.IntN(2)), Debounce: r.IntN(4), EveryTurn: r.IntN(3) == 0}
	cats := config.ResponseCategoryLabels
	if r.IntN(4) == 0 {
		sc.policy.Thresholds = map[string]float32{cats[r.IntN(len(cats))]: r.Float32(), cats[r.IntN(len(cats))]: r.Float32()}
	}
	if r.IntN(6) == 0 {
		sc.policy.Block = []string{cats[r.IntN(len(cats))], cats[r.IntN(len(cats))]}
	}
	ops := &sc.ops
	add := func(o invOp) { *ops = append(*ops, o) }
	maybe := func(p int) bool { return r.IntN(100) < p }
	maybeExtras := func() {
		if maybe(10) {
			add(invOp{kind: invCheck})
		}
		if maybe(5) {
			add(invOp{kind: invFlush})
		}
		if maybe(4) {
			// Mostly a bound the stream keeps within; sometimes one it
			// already passed (refused) or will pass (later input refused).
			add(invOp{kind: invSetMax, n: []int{0, 60 + r.IntN(300), 8192, 1 + r.IntN(60)}[r.IntN(4)]})
		}
	}
	if maybe(20) {
		add(invOp{kind: invSetMax, n: 40 + r.IntN(400)})
	}
	turns := 1 + r.IntN(3)
	for t := range turns {
		var msgs []Message
		if maybe(30) {
			msgs = append(msgs, Message{Role: "system", Content: invWordsText(r, 1, 8)})
		}
		if maybe(25) {
			msgs = append(msgs, Message{Role: "user", Content: invWordsText(r, 1, 6)}, Message{Role: "assistant", Content: invWordsText(r, 1, 6)})
		}
		plen := 1 + r.IntN(20)
		if maybe(15) {
			plen = 60 + r.IntN(120) // a long prefill, chunked
		}
		msgs = append(msgs, Message{Role: "user", Content: invWordsText(r, 1, plen)})
		add(invOp{kind: invPrompt, msgs: msgs})
		maybeExtras()
		if maybe(20) {
			add(invOp{kind: invStartThinking})
			for _, c := range invCut(r, invWordsText(r, 1, 15)) {
				add(invOp{kind: invText, text: c})
				maybeExtras()
			}
			add(invOp{kind: invEndThinking})
			maybeExtras()
		}
		for _, c := range invCut(r, invWordsText(r, 0, 30)) {
			add(invOp{kind: invText, text: c})
			maybeExtras()
			if maybe(4) {
				ids := make([]int, 1+r.IntN(4))
				for i := range ids {
					ids[i] = r.IntN(151643)
				}
				if maybe(5) {
					ids[len(ids)-1] = 151936 + r.IntN(3) // outside the vocabulary: refused
				}
				add(invOp{kind: invIDs, ids: ids})
			}
		}
		switch {
		case t == turns-1 && maybe(30): // left open
		case maybe(60):
			add(invOp{kind: invEndResponse})
		case maybe(50):
			add(invOp{kind: invFlush}) // the next prompt ends the response
		}
		maybeExtras()
	}
	add(invOp{kind: invCheck})
	if maybe(30) {
		// Closed somewhere: the ops after it are dropped.
		at := r.IntN(len(sc.ops) + 1)
		sc.ops = append(sc.ops[:at:at], invOp{kind: invClose})
	}
	return sc
}

// invQueue applies a queueing op to s (nothing runs).
func invQueue(s *Stream, o invOp) error {
	switch o.kind {
	case invPrompt:
		return s.QueuePrompt(o.msgs)
	case invText:
		return s.QueueText(o.text)
	case invIDs:
		return s.QueueIDs(o.ids)
	case invFlush:
		return s.QueueFlushText()
	case invEndResponse:
		return s.QueueEndResponse()
	case invStartThinking:
		return s.StartResponse(true)
	case invEndThinking:
		return s.QueueEndThinking()
	case invSetMax:
		return s.SetMaxTokens(o.n)
	case invClose:
		return s.Close()
	}
	panic(o.kind)
}

// invCheckState is what a check op records, once the stream's queue is empty.
type invCheckState struct {
	Decision   Decision
	FlaggedAt  int
	Flagged    bool
	Tokens     int // fed and queued
	Held       int
	LastPrompt *PromptVerdict
}

func invState(s *Stream) invCheckState {
	i, ok := s.Flagged()
	return invCheckState{Decision: s.Decision(), FlaggedAt: i, Flagged: ok, Tokens: s.Len() + s.Pending(), Held: s.HeldBytes(), LastPrompt: s.LastPrompt()}
}

// invRun is what one run of a script produced.
type invRun struct {
	prompts []PromptVerdict
	tokens  []TokenVerdict
	errs    []string // per op: "" or the error
	checks  map[int]invCheckState
	// per op, for the solo runs
	opPrompt []*PromptVerdict
	opTokens [][]TokenVerdict
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// invStream1 is a new stream with the script's policy, for a run alone.
func invStream1(t *testing.T, m *Model, sc invScript) *Stream {
	s := m.NewStream()
	if err := s.SetPolicy(sc.policy); err != nil {
		t.Fatal(err)
	}
	return s
}

// invSolo runs the script on a stream alone, draining after every op with
// steps of at most chunk tokens (0: whole).
func invSolo(t *testing.T, m *Model, sc invScript, chunk int) invRun {
	ctx := context.Background()
	s := invStream1(t, m, sc)
	defer s.Close()
	run := invRun{checks: map[int]invCheckState{}}
	for i, o := range sc.ops {
		var p *PromptVerdict
		var tv []TokenVerdict
		if o.kind == invCheck {
			run.checks[i] = invState(s)
		} else {
			run.errs = append(run.errs, errString(invQueue(s, o)))
		}
		for s.Pending() > 0 {
			rs, err := m.Step(ctx, []*Stream{s}, StepOptions{MaxTokens: chunk})
			if err != nil || rs[0].Err != nil {
				t.Fatalf("solo step: %v %v", err, rs[0].Err)
			}
			if chunk > 0 && rs[0].Fed > chunk {
				t.Fatalf("step fed %d tokens, cap %d", rs[0].Fed, chunk)
			}
			if rs[0].Prompt != nil {
				p = rs[0].Prompt
				run.prompts = append(run.prompts, *rs[0].Prompt)
			}
			tv = append(tv, rs[0].Tokens...)
		}
		run.tokens = append(run.tokens, tv...)
		if o.kind == invCheck {
			run.errs = append(run.errs, "")
		}
		run.opPrompt, run.opTokens = append(run.opPrompt, p), append(run.opTokens, tv)
	}
	return run
}

// invSync runs the script with the synchronous calls.
func invSync(t *testing.T, m *Model, sc invScript) invRun {
	ctx := context.Background()
	s := invStream1(t, m, sc)
	defer s.Close()
	run := invRun{checks: map[int]invCheckState{}}
	for i, o := range sc.ops {
		var p *PromptVerdict
		var tv []TokenVerdict
		var err error
		switch o.kind {
		case invPrompt:
			p, err = s.JudgePrompt(ctx, o.msgs)
		case invText:
			tv, err = s.AppendText(ctx, o.text)
		case invIDs:
			tv, err = s.AppendIDs(ctx, o.ids)
		case invFlush:
			tv, err = s.FlushText(ctx)
		case invEndResponse:
			tv, err = s.EndResponse(ctx)
		case invEndThinking:
			tv, err = s.EndThinking(ctx)
		case invCheck:
			run.checks[i] = invState(s)
		default:
			err = invQueue(s, o)
		}
		run.errs = append(run.errs, errString(err))
		run.opPrompt, run.opTokens = append(run.opPrompt, p), append(run.opTokens, tv)
	}
	return run
}

func invSameVerdict(a, b *Verdict) bool {
	return reflect.DeepEqual(a, b) && bitsEqual(a.RiskProbs, b.RiskProbs) && bitsEqual(a.CategoryProbs, b.CategoryProbs)
}

func invSamePrompt(a, b *PromptVerdict) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !invSameVerdict(&a.Verdict, &b.Verdict) || a.Position != b.Position || a.Flagged != b.Flagged || len(a.Turns) != len(b.Turns) {
		return false
	}
	for i := range a.Turns {
		if !invSamePrompt(&a.Turns[i], &b.Turns[i]) {
			return false
		}
	}
	return true
}

func invSameToken(a, b *TokenVerdict) bool {
	return a.Index == b.Index && a.Position == b.Position && a.ID == b.ID && a.Text == b.Text &&
		a.NonSafe == b.NonSafe && a.Flagged == b.Flagged && invSameVerdict(&a.Verdict, &b.Verdict)
}

func invSameCheck(a, b invCheckState) bool {
	return a.Decision == b.Decision && a.FlaggedAt == b.FlaggedAt && a.Flagged == b.Flagged &&
		a.Tokens == b.Tokens && a.Held == b.Held && invSamePrompt(a.LastPrompt, b.LastPrompt)
}

// invCompareSeq compares got's sequences with want's: equal, or, when
// prefix, a prefix of them (a stream closed with work queued).
func invCompareSeq(what string, got, want invRun, prefix bool) error {
	for i, e := range got.errs {
		if i < len(want.errs) && e != want.errs[i] {
			return fmt.Errorf("%s: op %d error %q, want %q", what, i, e, want.errs[i])
		}
	}
	if len(got.prompts) > len(want.prompts) || (!prefix && len(got.prompts) != len(want.prompts)) {
		pos := func(ps []PromptVerdict) (o []int) {
			for _, p := range ps {
				o = append(o, p.Position)
			}
			return o
		}
		return fmt.Errorf("%s: %d prompt verdicts at %v, want %d at %v; errs %q", what, len(got.prompts), pos(got.prompts), len(want.prompts), pos(want.prompts), got.errs)
	}
	for i := range got.prompts {
		if !invSamePrompt(&got.prompts[i], &want.prompts[i]) {
			return fmt.Errorf("%s: prompt verdict %d:\ngot  %+v\nwant %+v", what, i, got.prompts[i], want.prompts[i])
		}
	}
	if len(got.tokens) > len(want.tokens) || (!prefix && len(got.tokens) != len(want.tokens)) {
		return fmt.Errorf("%s: %d token verdicts, want %d", what, len(got.tokens), len(want.tokens))
	}
	for i := range got.tokens {
		if !invSameToken(&got.tokens[i], &want.tokens[i]) {
			return fmt.Errorf("%s: token verdict %d:\ngot  %+v\nwant %+v", what, i, got.tokens[i], want.tokens[i])
		}
	}
	for i, c := range got.checks {
		if w, ok := want.checks[i]; !ok || !invSameCheck(c, w) {
			return fmt.Errorf("%s: check at op %d:\ngot  %+v\nwant %+v", what, i, c, w)
		}
	}
	return nil
}

// invCompareSync compares the synchronous run op by op: a prompt's
// verdicts only (the synchronous JudgePrompt leaves out the verdicts of
// the response end it judges first).
func invCompareSync(sc invScript, got, want invRun) error {
	for i, o := range sc.ops {
		if got.errs[i] != want.errs[i] {
			return fmt.Errorf("sync: op %d %v: error %q, want %q", i, o, got.errs[i], want.errs[i])
		}
		if !invSamePrompt(got.opPrompt[i], want.opPrompt[i]) {
			return fmt.Errorf("sync: op %d %v: prompt verdict\ngot  %+v\nwant %+v", i, o, got.opPrompt[i], want.opPrompt[i])
		}
		if o.kind == invPrompt {
			continue
		}
		g, w := got.opTokens[i], want.opTokens[i]
		if len(g) != len(w) {
			return fmt.Errorf("sync: op %d %v: %d token verdicts, want %d", i, o, len(g), len(w))
		}
		for k := range g {
			if !invSameToken(&g[k], &w[k]) {
				return fmt.Errorf("sync: op %d %v: token %d\ngot  %+v\nwant %+v", i, o, k, g[k], w[k])
			}
		}
	}
	for i, c := range got.checks {
		if w := want.checks[i]; !invSameCheck(c, w) {
			return fmt.Errorf("sync: check at op %d:\ngot  %+v\nwant %+v", i, c, w)
		}
	}
	return nil
}

// invStream is a stream of the batched run.
type invStream struct {
	sc     invScript
	s      *Stream
	next   int
	run    invRun
	closed bool
	mu     *sync.Mutex // held by the steps' goroutines writing run.prompts, run.tokens
}

func (b *invStream) done() bool { return b.next >= len(b.sc.ops) }

// advance applies up to k more ops, stopping at a check the stream cannot
// take yet (its queue not empty).
func (b *invStream) advance(k int) {
	for ; k > 0 && !b.done(); k-- {
		o := b.sc.ops[b.next]
		if o.kind == invCheck {
			if b.s.Pending() > 0 {
				return
			}
			b.run.checks[b.next] = invState(b.s)
			b.run.errs = append(b.run.errs, "")
		} else {
			err := invQueue(b.s, o)
			b.run.errs = append(b.run.errs, errString(err))
		}
		if o.kind == invClose {
			b.closed = true
		}
		b.next++
	}
}

var invChunks = []int{0, 1, 2, 3, 5, 8, 13, 16, 64}

// invBatched runs the scripts together through Model.Step.
func invBatched(t *testing.T, m *Model, r *rand.Rand, scripts []invScript, logf func(string, ...any)) []*invStream {
	ctx := context.Background()
	var all []*invStream
	var mu sync.Mutex
	startAt := make([]int, len(scripts))
	for i := range startAt {
		startAt[i] = r.IntN(30)
	}
	for tick := 0; ; tick++ {
		for i, at := range startAt {
			if at == tick {
				s := m.NewStream()
				if err := s.SetPolicy(scripts[i].policy); err != nil {
					t.Fatal(err)
				}
				all = append(all, &invStream{sc: scripts[i], s: s, run: invRun{checks: map[int]invCheckState{}}, mu: &mu})
			}
		}
		// What this tick does, drawn before anything runs.
		advance := make([]int, len(all))
		for i := range all {
			if r.IntN(3) != 0 {
				advance[i] = 1 + r.IntN(4)
			}
		}
		everyone := tick%7 == 6
		var subset []*invStream
		for _, b := range all {
			if everyone || r.IntN(3) != 0 {
				subset = append(subset, b)
			}
		}
		r.Shuffle(len(subset), func(i, j int) { subset[i], subset[j] = subset[j], subset[i] })
		groups := 1 + r.IntN(3)
		chunks := make([]int, groups)
		for g := range chunks {
			chunks[g] = invChunks[r.IntN(len(invChunks))]
		}
		concurrent := r.IntN(2) == 0

		parts := make([][]*invStream, groups)
		for i, b := range subset {
			parts[i%groups] = append(parts[i%groups], b)
		}
		var wg sync.WaitGroup
		var stepErr error
		stepGroup := func(g int) {
			streams := make([]*Stream, len(parts[g]))
			for i, b := range parts[g] {
				streams[i] = b.s
			}
			rs, err := m.Step(ctx, streams, StepOptions{MaxTokens: chunks[g]})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				stepErr = err
				return
			}
			for i, res := range rs {
				b := parts[g][i]
				switch {
				case res.Err != nil:
					stepErr = fmt.Errorf("stream failed: %v", res.Err)
				case chunks[g] > 0 && res.Fed > chunks[g]:
					stepErr = fmt.Errorf("step fed %d tokens of one stream, cap %d", res.Fed, chunks[g])
				case res.Stream != b.s:
					stepErr = errors.New("results out of order")
				}
				if res.Prompt != nil {
					b.run.prompts = append(b.run.prompts, *res.Prompt)
				}
				b.run.tokens = append(b.run.tokens, res.Tokens...)
			}
		}
		queue := func() {
			for i, b := range all {
				b.advance(advance[i])
			}
		}
		if concurrent {
			// Queue (and close) while the steps run.
			for g := range groups {
				wg.Go(func() { stepGroup(g) })
			}
			queue()
			wg.Wait()
		} else {
			queue()
			for g := range groups {
				stepGroup(g)
			}
		}
		if stepErr != nil {
			t.Fatalf("tick %d: %v", tick, stepErr)
		}
		for _, b := range all {
			if b.closed {
				if n := b.s.CacheBytes(); n != 0 || b.s.Len() != 0 || b.s.Pending() != 0 {
					t.Fatalf("tick %d: closed stream holds %d cache bytes, %d tokens fed, %d queued", tick, n, b.s.Len(), b.s.Pending())
				}
			}
		}
		finished := len(all) == len(scripts)
		for _, b := range all {
			finished = finished && b.done() && b.s.Pending() == 0
		}
		if finished {
			logf("batched run: %d ticks", tick+1)
			return all
		}
		if tick > 5000 {
			t.Fatal("batched run does not finish")
		}
	}
}

func TestInvariants(t *testing.T) {
	seeds := 6
	if v := os.Getenv("INVARIANTS_SEEDS"); v != "" {
		seeds, _ = strconv.Atoi(v)
	}
	first := uint64(1)
	if v := os.Getenv("INVARIANTS_SEED"); v != "" {
		s, _ := strconv.ParseUint(v, 10, 64)
		first, seeds = s, 1
	}
	for seed := first; seed < first+uint64(seeds); seed++ {
		kv := kvCaches[seed%uint64(len(kvCaches))]
		t.Run(fmt.Sprintf("seed=%d/%v", seed, kv), func(t *testing.T) {
			invRunSeed(t, seed, tinyModelKV(t, "f32", nil, kv))
		})
	}
}

func invRunSeed(t *testing.T, seed uint64, m *Model) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	n := 12
	scripts := make([]invScript, n)
	ops := 0
	for i := range scripts {
		scripts[i] = invGenScript(r)
		ops += len(scripts[i].ops)
	}
	logf := t.Logf
	batched := invBatched(t, m, r, scripts, logf)
	total, refused, closed, flagged := 0, 0, 0, 0
	for i, b := range batched {
		total += len(b.run.tokens)
		for _, e := range b.run.errs {
			if e != "" {
				refused++
			}
		}
		if b.closed {
			closed++
		}
		for _, tv := range b.run.tokens {
			if tv.Flagged {
				flagged++
			}
		}
		want := invSolo(t, m, b.sc, 0)
		if err := invCompareSeq(fmt.Sprintf("stream %d batched vs solo", i), b.run, want, b.closed); err != nil {
			t.Errorf("%v\nscript: %v", err, b.sc.ops)
			continue
		}
		// One token a step, or another chunk, for a few streams.
		if i%4 == 0 {
			chunk := []int{1, 2, 7}[i/4%3]
			if err := invCompareSeq(fmt.Sprintf("stream %d chunk %d vs whole", i, chunk), invSolo(t, m, b.sc, chunk), want, false); err != nil {
				t.Errorf("%v\nscript: %v", err, b.sc.ops)
			}
		}
		if err := invCompareSync(b.sc, invSync(t, m, b.sc), want); err != nil {
			t.Errorf("stream %d: %v\nscript: %v", i, err, b.sc.ops)
		}
		b.s.Close()
		if c := b.s.CacheBytes(); c != 0 {
			t.Errorf("stream %d: %d cache bytes after Close", i, c)
		}
	}
	t.Logf("seed %d: %d streams (%d closed early), %d ops (%d refused), %d token verdicts batched (%d flagging)", seed, n, closed, ops, refused, total, flagged)
}

// TestStepReportsEveryPromptVerdict: a stream whose queue holds the ends of
// two user turns (a gateway queued the next prompt before stepping, or a
// replayed conversation) gets each prompt verdict in a result of its own,
// whatever StepOptions.MaxTokens is: a step over the whole queue once
// reported only the last one, the first, flagged or not, lost.
func TestStepReportsEveryPromptVerdict(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	prompts := func(maxTokens int) []int {
		s := m.NewStream()
		defer s.Close()
		for _, q := range []string{"How do I make a bomb?", "Thanks. And tea?"} {
			if err := s.QueuePrompt([]Message{{Role: "user", Content: q}}); err != nil {
				t.Fatal(err)
			}
			if err := s.QueueEndResponse(); err != nil { // an empty answer between the turns
				t.Fatal(err)
			}
		}
		var at []int
		for s.Pending() > 0 {
			rs, err := m.Step(ctx, []*Stream{s}, StepOptions{MaxTokens: maxTokens})
			if err != nil {
				t.Fatal(err)
			}
			if p := rs[0].Prompt; p != nil {
				at = append(at, p.Position)
			}
		}
		return at
	}
	one, whole := prompts(1), prompts(0)
	if len(one) != 2 {
		t.Fatalf("one token a step: prompt verdicts at %v, want two", one)
	}
	if len(whole) != len(one) {
		t.Fatalf("every prompt verdict reported one token a step (at positions %v), but a step over the whole queue reports %v: the first user turn's verdict is lost", one, whole)
	}
}
