package server

// Randomized invariant tests of the server (seeded scripts, in the style
// of pebble's metamorphic tests): several clients drive their streams
// concurrently, through the Scheduler's Submit and through the HTTP
// streams API, some of them cancelling at random points; every verdict a
// client got must be bitwise the one its stream gives alone, and once the
// clients are done no stream, KV charge or goroutine may be left.
//
//	go test -race -run TestInvariants -count=1 ./internal/server/
//
// INVARIANTS_SEEDS=n runs n seeds (by default 5 and 4, a few seconds under
// -race; 150 ran clean); INVARIANTS_SEED=s runs s alone.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
)

func invSeeds(def int) (first uint64, n int) {
	first, n = 1, def
	if v := os.Getenv("INVARIANTS_SEEDS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("INVARIANTS_SEED"); v != "" {
		first, _ = strconv.ParseUint(v, 10, 64)
		n = 1
	}
	return first, n
}

var invWords = []string{
	"the", "tea", "water", "boil", "how", "do", "I", "make", "a", "bomb", "kill", "hello", "world",
	"Café", "crème", "naïve", "日本語", "のテキスト", "🍞", "🔥", "🍵", "—", "¿Qué", "tal?", "\n", "\n\n",
	"<|im_end|>", "<|im_start|>assistant", "</think>", "  ", "!!!", "1234567", "supercalifragilistic",
	"e\u0301", "ﬁ", "a\u0300\u0301\u0302", ".", ",", "'s", "don't",
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

// invCut cuts text at random byte offsets (inside characters too, which
// only the library's QueueText takes: JSON needs whole characters).
func invCut(r *rand.Rand, text string, whole bool) []string {
	var out []string
	for len(text) > 0 {
		n := 1 + r.IntN(min(len(text), 1+r.IntN(24)))
		for whole && n < len(text) && !utf8Start(text[n]) {
			n++
		}
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

type invOpKind int

const (
	invPrompt invOpKind = iota
	invText
	invTextFlush
	invIDs
	invFlush
	invEndResponse
)

type invOp struct {
	kind   invOpKind
	prompt string
	text   string
	ids    []int
	// cancel: 0 none, 1 the context is done before the operation, 2 it
	// ends while the operation runs (after a random number of yields).
	cancel int
	yields int
}

func (o invOp) String() string {
	k := [...]string{"prompt", "text", "text+flush", "ids", "flush", "end-response"}[o.kind]
	s := k
	switch o.kind {
	case invPrompt:
		s = fmt.Sprintf("prompt(%q)", o.prompt)
	case invText, invTextFlush:
		s = fmt.Sprintf("%s(%q)", k, o.text)
	case invIDs:
		s = fmt.Sprintf("ids(%v)", o.ids)
	}
	if o.cancel > 0 {
		s += fmt.Sprintf("[cancel %d after %d]", o.cancel, o.yields)
	}
	return s
}

// invGenScript is a client's conversation: a prompt, then response
// pieces, and later turns. whole keeps text chunks whole characters;
// endResponse allows end-response ops (the library's, not the HTTP API's).
func invGenScript(r *rand.Rand, whole, endResponse bool, cancelPct int) []invOp {
	var ops []invOp
	maybe := func(p int) bool { return r.IntN(100) < p }
	for t := range 1 + r.IntN(3) {
		plen := 1 + r.IntN(15)
		if maybe(20) {
			plen = 40 + r.IntN(120) // a prefill over several chunks
		}
		_ = t
		p := invWordsText(r, 1, plen)
		if strings.TrimSpace(p) == "" {
			p = "hi" + p // an empty prompt is refused (RenderConversation)
		}
		ops = append(ops, invOp{kind: invPrompt, prompt: p})
		for _, c := range invCut(r, invWordsText(r, 0, 25), whole) {
			k := invText
			if maybe(8) {
				k = invTextFlush
			}
			ops = append(ops, invOp{kind: k, text: c})
			if maybe(5) {
				ids := make([]int, 1+r.IntN(4))
				for i := range ids {
					ids[i] = r.IntN(151643)
				}
				ops = append(ops, invOp{kind: invIDs, ids: ids})
			}
			if maybe(5) {
				ops = append(ops, invOp{kind: invFlush})
			}
		}
		if endResponse && maybe(50) {
			ops = append(ops, invOp{kind: invEndResponse})
		} else if maybe(30) {
			ops = append(ops, invOp{kind: invFlush})
		}
	}
	for i := range ops {
		if maybe(cancelPct) {
			ops[i].cancel = 1 + r.IntN(2)
			ops[i].yields = r.IntN(200)
		}
	}
	return ops
}

// invSeq is the verdicts a stream gave, in order.
type invSeq struct {
	prompts []guard.PromptVerdict
	tokens  []guard.TokenVerdict
}

func (q *invSeq) add(p *guard.PromptVerdict, tvs []guard.TokenVerdict) {
	if p != nil {
		q.prompts = append(q.prompts, *p)
	}
	q.tokens = append(q.tokens, tvs...)
}

func invSameVerdict(a, b *guard.Verdict) bool {
	return reflect.DeepEqual(a, b) && bitsEqual(a.RiskProbs, b.RiskProbs) && bitsEqual(a.CategoryProbs, b.CategoryProbs)
}

func invSamePrompt(a, b *guard.PromptVerdict) bool {
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

func invSameToken(a, b *guard.TokenVerdict) bool {
	return a.Index == b.Index && a.Position == b.Position && a.ID == b.ID && a.Text == b.Text &&
		a.NonSafe == b.NonSafe && a.Flagged == b.Flagged && invSameVerdict(&a.Verdict, &b.Verdict)
}

// compare checks got against want: equal, or a prefix of it.
func (got *invSeq) compare(want *invSeq, prefix bool) error {
	if len(got.prompts) > len(want.prompts) || (!prefix && len(got.prompts) != len(want.prompts)) {
		return fmt.Errorf("%d prompt verdicts, want %d", len(got.prompts), len(want.prompts))
	}
	for i := range got.prompts {
		if !invSamePrompt(&got.prompts[i], &want.prompts[i]) {
			return fmt.Errorf("prompt verdict %d:\ngot  %+v\nwant %+v", i, got.prompts[i], want.prompts[i])
		}
	}
	if len(got.tokens) > len(want.tokens) || (!prefix && len(got.tokens) != len(want.tokens)) {
		return fmt.Errorf("%d token verdicts, want %d", len(got.tokens), len(want.tokens))
	}
	for i := range got.tokens {
		if !invSameToken(&got.tokens[i], &want.tokens[i]) {
			return fmt.Errorf("token verdict %d:\ngot  %+v\nwant %+v", i, got.tokens[i], want.tokens[i])
		}
	}
	return nil
}

// invQueue queues op on s as the library's queueing calls do.
func invQueue(s *guard.Stream, o invOp) error {
	switch o.kind {
	case invPrompt:
		return s.QueuePrompt([]guard.Message{{Role: "user", Content: o.prompt}})
	case invText:
		return s.QueueText(o.text)
	case invTextFlush:
		if err := s.QueueText(o.text); err != nil {
			return err
		}
		return s.QueueFlushText()
	case invIDs:
		return s.QueueIDs(o.ids)
	case invFlush:
		return s.QueueFlushText()
	case invEndResponse:
		return s.QueueEndResponse()
	}
	panic(o.kind)
}

// invSolo runs ops on a stream alone, each drained by whole steps, up to
// (not including) op stop.
func invSolo(t *testing.T, m *guard.Model, ops []invOp) (invSeq, []string) {
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	var seq invSeq
	var errs []string
	for _, o := range ops {
		err := invQueue(s, o)
		errs = append(errs, fmt.Sprint(err))
		for s.Pending() > 0 {
			rs, err := m.Step(ctx, []*guard.Stream{s}, guard.StepOptions{})
			if err != nil || rs[0].Err != nil {
				t.Fatalf("solo step: %v %v", err, rs[0].Err)
			}
			seq.add(rs[0].Prompt, rs[0].Tokens)
		}
	}
	return seq, errs
}

// invCancelCtx is a context for op: done already, ended after a few
// yields from another goroutine, or never.
func invCancelCtx(o invOp) (context.Context, func()) { return invCancelCtxAfter(o, 0) }

// invCancelCtxAfter is invCancelCtx, the cancellation also waiting
// o.yields times unit (a request on its way to a server).
func invCancelCtxAfter(o invOp, unit time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	switch o.cancel {
	case 1:
		cancel()
	case 2:
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range o.yields {
				runtime.Gosched()
			}
			time.Sleep(time.Duration(o.yields) * unit)
			cancel()
		}()
		return ctx, func() { <-done; cancel() }
	}
	return ctx, cancel
}

// invSettle waits, a bounded time, for cond; it reports whether it held.
func invSettle(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

var invSchedOpts = []SchedulerOptions{
	{ChunkTokens: 16, MaxBatchTokens: 96},
	{ChunkTokens: 1, MaxBatchTokens: 4},
	{ChunkTokens: 64, MaxBatchTokens: 70, GatherMax: -1},
	{ChunkTokens: 7, MaxBatchTokens: 2, MaxBatchStreams: 3},
	{ChunkTokens: 64, MaxBatchStreams: 1},
	{ChunkTokens: 3, MaxBatchTokens: 1024, GatherMax: time.Millisecond},
	{},
}

// TestInvariantsScheduler: clients queue their operations on their own
// streams and Submit them to one Scheduler, concurrently, some cancelling.
func TestInvariantsScheduler(t *testing.T) {
	m := testModel(t)
	invSolo(t, m, []invOp{{kind: invPrompt, prompt: "warm up"}}) // the kernels' pool started
	base := runtime.NumGoroutine()
	first, n := invSeeds(5)
	for seed := first; seed < first+uint64(n); seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x5c4ed))
			opts := invSchedOpts[int(seed)%len(invSchedOpts)]
			const clients = 10
			scripts := make([][]invOp, clients)
			for i := range scripts {
				scripts[i] = invGenScript(r, false, true, 2)
			}
			var nsteps atomic.Int64
			sc := NewScheduler(m, opts, func(StepStats) {
				// Some steps take a while, so that cancellations land
				// while a stream is in one.
				if nsteps.Add(1)%4 == 0 {
					time.Sleep(200 * time.Microsecond)
				}
			})
			var cancelled, answered atomic.Int64
			streams := make([]*guard.Stream, clients)
			got := make([]invSeq, clients)
			errs := make([][]string, clients)
			stopped := make([]int, clients) // the op a cancellation ended the client at, or len(ops)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures []string
			fail := func(format string, args ...any) {
				mu.Lock()
				failures = append(failures, fmt.Sprintf(format, args...))
				mu.Unlock()
			}
			for i := range clients {
				s := m.NewStream()
				streams[i] = s
				wg.Go(func() {
					ops := scripts[i]
					stopped[i] = len(ops)
					for k, o := range ops {
						err := invQueue(s, o)
						errs[i] = append(errs[i], fmt.Sprint(err))
						ctx, stop := invCancelCtx(o)
						res, serr := sc.Submit(ctx, s)
						stop()
						switch {
						case serr == nil:
							got[i].add(res.Prompt, res.Tokens)
						case errors.Is(serr, context.Canceled) && o.cancel > 0:
							cancelled.Add(1)
						default:
							fail("client %d op %d %v: Submit: %v", i, k, o, serr)
						}
						if o.cancel > 0 {
							// A cancelled Submit closed the stream, and let
							// go of it: it holds no cache.
							if serr != nil && (s.CacheBytes() != 0 || s.Len() != 0 || s.Pending() != 0) {
								fail("client %d op %d: cancelled stream holds %d cache bytes, %d fed, %d queued", i, k, s.CacheBytes(), s.Len(), s.Pending())
							}
							stopped[i] = k + 1
							if serr == nil {
								answered.Add(1)
							}
							if serr != nil {
								stopped[i] = k
							}
							s.Close()
							return
						}
					}
				})
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			if q := sc.queued(); q != 0 {
				t.Errorf("%d jobs left in the scheduler", q)
			}
			sc.Close()
			ops, done, tokens := 0, 0, 0
			for i := range clients {
				ops += stopped[i]
				if stopped[i] == len(scripts[i]) {
					done++
				}
				tokens += len(got[i].tokens)
			}
			t.Logf("seed %d (%+v): %d clients (%d to the end), %d operations, %d token verdicts, %d steps; %d Submits cancelled, %d answered before their cancellation",
				seed, opts, clients, done, ops, tokens, nsteps.Load(), cancelled.Load(), answered.Load())
			for i, s := range streams {
				want, wantErrs := invSolo(t, m, scripts[i][:stopped[i]])
				if !invSameStrings(errs[i][:stopped[i]], wantErrs) {
					t.Errorf("client %d: queue errors %q, want %q", i, errs[i], wantErrs)
				}
				if err := got[i].compare(&want, stopped[i] < len(scripts[i])); err != nil {
					t.Errorf("client %d (%+v, stopped at op %d of %d): %v\nscript %v", i, opts, stopped[i], len(scripts[i]), err, scripts[i])
				}
				s.Close()
				if b := s.CacheBytes(); b != 0 {
					t.Errorf("client %d: %d cache bytes after Close", i, b)
				}
			}
		})
	}
	if !invSettle(func() bool { return runtime.NumGoroutine() <= base }) {
		t.Errorf("%d goroutines left, %d before", runtime.NumGoroutine(), base)
	}
}

func invSameStrings(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// TestInvariantsHTTP: clients drive sessions through the HTTP streams
// API of a server with a KV budget, some cancelling requests; every
// verdict a client got equals a solo run's, and once they are done (and
// have closed what they know of), no charge, session or goroutine is left.
func TestInvariantsHTTP(t *testing.T) {
	m := testModel(t)
	invSolo(t, m, []invOp{{kind: invPrompt, prompt: "warm up"}})
	first, n := invSeeds(4)
	for seed := first; seed < first+uint64(n); seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { invHTTPSeed(t, m, seed) })
	}
}

// invHTTPAnswer is a stream operation's answer.
type invHTTPAnswer struct {
	Prompt *guard.PromptVerdict `json:"prompt"`
	Tokens []guard.TokenVerdict `json:"tokens"`
	Error  *apiErrorBody        `json:"error"`
}

func invHTTPSeed(t *testing.T, m *guard.Model, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x477e))
	base := runtime.NumGoroutine()
	const clients = 8
	bpp := m.Info().KVBytesPerToken
	var audit strings.Builder
	var auditMu sync.Mutex
	opts := Options{
		Model:         m,
		Audit:         slog.New(slog.NewJSONHandler(lockedWriter{&auditMu, &audit}, nil)),
		KVBudgetBytes: bpp * int64(900+r.IntN(2000)),
		KVBudgetWait:  5 * time.Second,
		IdleTimeout:   3 * time.Second, // a session whose create was cancelled too late expires
		Scheduler:     invSchedOpts[int(seed)%len(invSchedOpts)],
	}
	if seed%3 == 0 {
		// Streams meet their length limit: the operation is refused, or
		// the stream ended (response text it cannot take).
		opts.MaxStreamTokens = 60 + r.IntN(200)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// The same scheduler, some of its steps slowed, so that cancelled
	// requests land on the server while their stream is queued or in a
	// step.
	srv.sched.Close()
	var nsteps atomic.Int64
	srv.sched = NewScheduler(m, invSchedOpts[int(seed)%len(invSchedOpts)], func(st StepStats) {
		srv.metrics.step(st)
		if nsteps.Add(1)%3 == 0 {
			time.Sleep(300 * time.Microsecond)
		}
	})
	ts := httptest.NewServer(srv.Handler())
	client := ts.Client()
	scripts := make([][]invOp, clients)
	for i := range scripts {
		scripts[i] = invGenScript(r, true, false, 2)
	}
	got := make([]invSeq, clients)
	stopped := make([]int, clients)
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// call sends one request; ok is false when the client cancelled it or
	// it was refused (then the client closes the stream and stops).
	call := func(ctx context.Context, method, path, id string, body any) (int, invHTTPAnswer, error) {
		var rd io.Reader
		if body != nil {
			js, _ := json.Marshal(body)
			rd = bytes.NewReader(js)
		}
		req, _ := http.NewRequestWithContext(ctx, method, ts.URL+path, rd)
		req.Header.Set("X-Streamguard-Stream", id)
		resp, err := client.Do(req)
		if err != nil {
			return 0, invHTTPAnswer{}, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, invHTTPAnswer{}, err
		}
		var a invHTTPAnswer
		if err := json.Unmarshal(raw, &a); err != nil {
			return resp.StatusCode, a, fmt.Errorf("status %d, body %q: %v", resp.StatusCode, raw, err)
		}
		return resp.StatusCode, a, nil
	}
	var tooLong atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			id := fmt.Sprintf("inv-%d-%d", seed, i)
			ops := scripts[i]
			stopped[i] = len(ops)
			defer func() {
				// Close what the client may still hold (a request it
				// cancelled may have opened or kept the stream).
				st, a, err := call(context.Background(), "DELETE", "/v1/streams/"+id, id, nil)
				if stopped[i] == len(ops) && (err != nil || st != http.StatusOK) {
					fail("client %d: close: %d %v %+v", i, st, err, a.Error)
				}
				if st == http.StatusOK && stopped[i] == len(ops) {
					got[i].add(nil, a.Tokens) // the held end judged at close
				}
			}()
			for k, o := range ops {
				var method, path string
				var body any
				switch {
				case k == 0:
					method, path, body = "POST", "/v1/streams", map[string]any{"prompt": o.prompt}
				case o.kind == invPrompt:
					method, path, body = "POST", "/v1/streams/"+id+"/prompt", map[string]any{"prompt": o.prompt}
				case o.kind == invText || o.kind == invTextFlush:
					method, path, body = "POST", "/v1/streams/"+id+"/append", map[string]any{"text": o.text, "flush": o.kind == invTextFlush}
				case o.kind == invIDs:
					method, path, body = "POST", "/v1/streams/"+id+"/append", map[string]any{"ids": o.ids}
				case o.kind == invFlush:
					method, path = "POST", "/v1/streams/"+id+"/flush"
				}
				ctx, stop := invCancelCtxAfter(o, 20*time.Microsecond)
				st, a, err := call(ctx, method, path, id, body)
				stop()
				switch {
				case err != nil && o.cancel > 0 && ctx.Err() != nil:
					stopped[i] = k
					return
				case err != nil:
					fail("client %d op %d %v: %v", i, k, o, err)
					stopped[i] = k
					return
				case st == http.StatusBadRequest && a.Error != nil && a.Error.Code == "context_length_exceeded":
					tooLong.Add(1)
					stopped[i] = k
					return
				case st == http.StatusTooManyRequests:
					// The budget was full for the wait: refused, the
					// client gives up.
					stopped[i] = k
					return
				case st != http.StatusOK && st != http.StatusCreated:
					if o.cancel > 0 { // the server saw the cancellation (its answer may still arrive)
						stopped[i] = k
						return
					}
					fail("client %d op %d %v: status %d %+v", i, k, o, st, a.Error)
					stopped[i] = k
					return
				}
				got[i].add(a.Prompt, a.Tokens)
				if o.cancel > 0 { // answered before the cancellation: stop all the same
					stopped[i] = k + 1
					return
				}
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	ops, done, tokens := 0, 0, 0
	for i := range clients {
		ops += stopped[i]
		if stopped[i] == len(scripts[i]) {
			done++
		}
		tokens += len(got[i].tokens)
	}
	waits, _ := srv.budget.waits()
	auditMu.Lock()
	closedOnError := strings.Count(audit.String(), `"reason":"error"`)
	auditMu.Unlock()
	t.Logf("seed %d: %d clients (%d to the end), %d operations answered, %d token verdicts; %d steps; budget %d positions, waits %+v; streams closed on error %d; %d operations past the length limit %d",
		seed, clients, done, ops, tokens, srv.metrics.steps.Load(), srv.budget.limit, waits, closedOnError, tooLong.Load(), srv.maxStreamTokens)
	for i := range clients {
		want := invHTTPSolo(t, m, scripts[i][:stopped[i]], stopped[i] == len(scripts[i]))
		if err := got[i].compare(&want, stopped[i] < len(scripts[i])); err != nil {
			t.Errorf("client %d (stopped at op %d of %d): %v\nscript %v", i, stopped[i], len(scripts[i]), err, scripts[i])
		}
	}
	// Every stream is closed (or expires, when a cancelled create opened
	// it after the client's close): nothing stays charged.
	if !invSettle(func() bool { used, _ := srv.budget.usage(); return used == 0 && srv.sessions.len() == 0 }) {
		used, _ := srv.budget.usage()
		t.Errorf("after every client closed its stream: %d KV positions charged, %d sessions, %d open streams", used, srv.sessions.len(), srv.metrics.openStreams.Load())
	}
	if n := srv.metrics.openStreams.Load(); n != 0 {
		t.Errorf("%d streams open", n)
	}
	if q := srv.sched.queued(); q != 0 {
		t.Errorf("%d jobs in the scheduler", q)
	}
	ts.Close()
	srv.Close()
	if !invSettle(func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf)
	}
}

// invHTTPSolo is what the HTTP operations give, on a library stream alone.
func invHTTPSolo(t *testing.T, m *guard.Model, ops []invOp, closed bool) invSeq {
	ctx := context.Background()
	s := m.NewStream()
	defer s.Close()
	var seq invSeq
	must := func(tvs []guard.TokenVerdict, err error) []guard.TokenVerdict {
		if err != nil {
			t.Fatal(err)
		}
		return tvs
	}
	lead := false // the streams API drops the newlines that begin a response's text
	for _, o := range ops {
		switch o.kind {
		case invText, invTextFlush:
			if lead {
				o.text = strings.TrimLeft(o.text, "\n")
				lead = o.text == ""
			}
		case invPrompt:
			lead = true
		case invIDs:
			lead = false
		}
		switch o.kind {
		case invPrompt:
			tail := must(s.FlushText(ctx))
			pv, err := s.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: o.prompt}})
			if err != nil {
				t.Fatal(err)
			}
			seq.add(pv, tail)
		case invText:
			seq.add(nil, must(s.AppendText(ctx, o.text)))
		case invTextFlush:
			seq.add(nil, must(s.AppendText(ctx, o.text)))
			seq.add(nil, must(s.FlushText(ctx)))
		case invIDs:
			seq.add(nil, must(s.AppendIDs(ctx, o.ids)))
		case invFlush:
			seq.add(nil, must(s.FlushText(ctx)))
		}
	}
	if closed {
		seq.add(nil, must(s.FlushText(ctx)))
	}
	return seq
}
