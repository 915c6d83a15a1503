package server

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestBatchInvariance submits many streams at once, in a mix of prompt
// prefills (longer than a chunk) and response tokens, so that they share
// steps of every size, and checks every verdict against the stream run
// alone.
func TestBatchInvariance(t *testing.T) {
	m := testModel(t)
	var steps []StepStats
	var mu sync.Mutex
	sc := NewScheduler(m, SchedulerOptions{ChunkTokens: 16, MaxBatchTokens: 96}, func(st StepStats) {
		mu.Lock()
		steps = append(steps, st)
		mu.Unlock()
	})
	defer sc.Close()

	const n = 12
	type conv struct {
		msgs []tokenizer.Message
		resp []int
	}
	convs := make([]conv, n)
	for i := range convs {
		prompt := fmt.Sprintf("Question %d: %s", i, "tell me about the history of tea in a few long sentences please "+fmt.Sprint(i*i))
		convs[i] = conv{msgs: []tokenizer.Message{{Role: "user", Content: prompt}}, resp: guardhook.Tokenizer(m).Encode(fmt.Sprintf("Answer %d: tea came from China, then %d ships carried it west.", i, i))}
	}
	streams := make([]*guard.Stream, n)
	for i := range streams {
		streams[i] = m.NewStream()
		defer streams[i].Close()
	}

	run := func(queue func(i int) error) []Result {
		out := make([]Result, n)
		sc.gate.Lock()
		var wg sync.WaitGroup
		for i := range n {
			if err := queue(i); err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				r, err := sc.Submit(context.Background(), streams[i])
				if err != nil {
					t.Error(err)
				}
				out[i] = r
			})
		}
		for sc.queued() < n { // every job is waiting behind the gate
			runtime.Gosched()
		}
		sc.gate.Unlock()
		wg.Wait()
		return out
	}
	prompts := run(func(i int) error { return streams[i].QueuePrompt(guardhook.Messages[guard.Message](convs[i].msgs)) })
	resps := run(func(i int) error { return streams[i].QueueIDs(convs[i].resp) })

	for i, c := range convs {
		wantPV, wantTok := solo(t, m, m.Policy(), c.msgs, c.resp)
		samePrompt(t, fmt.Sprint("stream ", i), prompts[i].Prompt, wantPV)
		sameTokens(t, fmt.Sprint("stream ", i), tokensOrEmpty(resps[i].Tokens), wantTok)
	}
	maxStreams, maxTokens := 0, 0
	mu.Lock()
	defer mu.Unlock()
	for _, st := range steps {
		maxStreams, maxTokens = max(maxStreams, st.Streams), max(maxTokens, st.Tokens)
		if st.Tokens > 96 && st.Streams > 1 {
			t.Errorf("step of %d tokens over %d streams exceeds the cap of 96", st.Tokens, st.Streams)
		}
	}
	// The first step takes 6 prefill chunks of 16 (96 tokens); later steps
	// take the remaining chunks: batching happened, and prompts were cut.
	if maxStreams < 6 || maxTokens != 96 {
		t.Fatalf("largest step %d streams, %d tokens; steps %+v", maxStreams, maxTokens, steps)
	}
}

// TestPickSkipsLongChunks: a step fills with short chunks around a prefill,
// whose chunk is cut to the room left.
func TestPickSkipsLongChunks(t *testing.T) {
	m := testModel(t)
	sc := &Scheduler{m: m, opts: SchedulerOptions{ChunkTokens: 64, MaxBatchTokens: 70}.withDefaults()}
	mk := func(n int) *job {
		s := m.NewStream()
		ids := make([]int, n)
		ids[n-1] = 151645
		if err := s.QueuePromptIDs(ids); err != nil {
			t.Fatal(err)
		}
		return &job{s: s}
	}
	sc.pending = []*job{mk(10), mk(100), mk(1), mk(2)}
	got := sc.pick()
	if len(got) != 4 || got[0] != sc.pending[0] || got[1] != sc.pending[2] || got[2] != sc.pending[3] || got[3] != sc.pending[1] || sc.chunk != 70-13 {
		t.Fatalf("picked %d jobs, chunk %d; want the three short ones, then the prefill with a chunk of 57", len(got), sc.chunk)
	}
	sc.opts.MaxBatchStreams = 1
	for _, j := range sc.pending {
		j.inStep = false
	}
	if got := sc.pick(); len(got) != 1 {
		t.Fatalf("MaxBatchStreams 1 picked %d", len(got))
	}
}

// pickJobs queues one job per length on fresh streams of m (prompts of n
// tokens).
func pickJobs(t *testing.T, m *guard.Model, ns ...int) []*job {
	t.Helper()
	jobs := make([]*job, len(ns))
	for i, n := range ns {
		s := m.NewStream()
		t.Cleanup(func() { s.Close() })
		ids := make([]int, n)
		ids[n-1] = 151645
		if err := s.QueuePromptIDs(ids); err != nil {
			t.Fatal(err)
		}
		jobs[i] = &job{s: s}
	}
	return jobs
}

// TestPickShortChunksFirst: a streamed token never waits behind other
// streams' prefills, however many older ones fill the step's tokens (one
// moderation request of sixteen long inputs, say); and the prefills still
// go on, a chunk a step at least, however many streams stream.
func TestPickShortChunksFirst(t *testing.T) {
	m := testModel(t)
	sc := &Scheduler{m: m, opts: SchedulerOptions{}.withDefaults()} // 64-token chunks, 1,024 a step
	lens := make([]int, 17)
	for i := range 16 {
		lens[i] = 1000
	}
	lens[16] = 1
	sc.pending = pickJobs(t, m, lens...)
	got := sc.pick()
	if !slices.Contains(got, sc.pending[16]) || len(got) != 16 {
		t.Fatalf("sixteen 1,000-token prefills before a 1-token chunk: picked %d jobs, the short one %v; want it and 15 prefill chunks",
			len(got), slices.Contains(got, sc.pending[16]))
	}

	lens = make([]int, 1100)
	for i := range lens {
		lens[i] = 1
	}
	lens[len(lens)-1] = 500
	sc.pending = pickJobs(t, m, lens...)
	got = sc.pick()
	if !slices.Contains(got, sc.pending[len(lens)-1]) {
		t.Fatalf("1,099 one-token chunks and a prefill: the prefill got no chunk (%d jobs picked)", len(got))
	}
	if n := len(got); n != 1024-64+1 {
		t.Errorf("picked %d jobs, want 960 short ones and the prefill's chunk", n)
	}

	// However the options leave less than a chunk beside the short ones,
	// the oldest prefill gets a chunk every step, cut to what is left.
	for _, o := range []SchedulerOptions{{ChunkTokens: 64, MaxBatchTokens: 100}, {ChunkTokens: 64, MaxBatchTokens: 32}, {ChunkTokens: 64, MaxBatchTokens: 2}} {
		sc := &Scheduler{m: m, opts: o.withDefaults()}
		lens := []int{500}
		for range 40 {
			lens = append(lens, 1)
		}
		lens = append(lens, 10) // a short chunk larger than the smallest cap
		sc.pending = pickJobs(t, m, lens...)
		for step := range 5 {
			got := sc.pick()
			tokens := 0
			for _, j := range got {
				tokens += min(j.s.Pending(), sc.chunk)
				j.inStep = false
			}
			if !slices.Contains(got, sc.pending[0]) || tokens > max(o.MaxBatchTokens, 1+sc.chunk) || sc.chunk < 1 {
				t.Fatalf("%+v, step %d: the oldest job, a 500-token prefill, left out beside 40 one-token streams (%d jobs, %d tokens, chunk %d)",
					o, step, len(got), tokens, sc.chunk)
			}
		}
	}

	// A lone short chunk over a tiny cap: the prefill beside it still gets
	// a chunk, of one token (no negative room, which Step would read as
	// "no cap").
	sc = &Scheduler{m: m, opts: SchedulerOptions{ChunkTokens: 64, MaxBatchTokens: 2}.withDefaults()}
	sc.pending = pickJobs(t, m, 500, 10)
	if got := sc.pick(); len(got) != 2 || sc.chunk != 1 {
		t.Errorf("a 10-token chunk and a prefill under a cap of 2: %d jobs, chunk %d; want both, chunk 1", len(got), sc.chunk)
	}

	// One stream a step: the oldest, whatever its chunk.
	sc.opts.MaxBatchStreams = 1
	sc.pending = pickJobs(t, m, 500, 1, 1)
	if got := sc.pick(); len(got) != 1 || got[0] != sc.pending[0] {
		t.Errorf("MaxBatchStreams 1: picked %d jobs, want the oldest", len(got))
	}
}

// TestGatherWaitsForCohort: after a step with streams A and B, a step
// that could start with A alone waits for B (within the bound), so the
// batch does not split into alternating halves.
func TestGatherWaitsForCohort(t *testing.T) {
	m := testModel(t)
	var mu sync.Mutex
	var sizes []int
	sc := NewScheduler(m, SchedulerOptions{GatherMax: time.Hour}, func(st StepStats) {
		mu.Lock()
		sizes = append(sizes, st.Streams)
		mu.Unlock()
	})
	defer sc.Close()
	a, b := m.NewStream(), m.NewStream()
	defer a.Close()
	defer b.Close()
	both := func(queue func(s *guard.Stream) error) {
		sc.gate.Lock()
		var wg sync.WaitGroup
		for _, s := range []*guard.Stream{a, b} {
			if err := queue(s); err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				if _, err := sc.Submit(context.Background(), s); err != nil {
					t.Error(err)
				}
			})
		}
		for sc.queued() < 2 {
			runtime.Gosched()
		}
		sc.gate.Unlock()
		wg.Wait()
	}
	both(func(s *guard.Stream) error { return s.QueuePrompt([]guard.Message{{Role: "user", Content: "hi"}}) })
	// Pretend the step took long, so that the wait bound is far away: the
	// next step can only start when B is back.
	sc.mu.Lock()
	sc.lastStep, sc.lastEnd = time.Hour, time.Now()
	sc.mu.Unlock()
	var wg sync.WaitGroup
	for i, s := range []*guard.Stream{a, b} {
		if err := s.QueueIDs([]int{9707}); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if _, err := sc.Submit(context.Background(), s); err != nil {
				t.Error(err)
			}
		})
		for i == 0 && sc.queued() < 1 { // A waits alone before B comes
			runtime.Gosched()
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 2 || sizes[1] != 2 {
		t.Fatalf("step sizes %v, want [2 2]", sizes)
	}
}

// TestStepTokensCountsWhatWasFed: StepStats.Tokens
// (streamguard_batch_tokens) is what the steps fed: a stream holding two
// user turns (a resume replays every prompt) stops a step before the second
// turn's end, where min(Pending, chunk) counted tokens no step fed.
func TestStepTokensCountsWhatWasFed(t *testing.T) {
	m := testModel(t)
	var mu sync.Mutex
	stepped := 0
	sc := NewScheduler(m, SchedulerOptions{}, func(st StepStats) {
		mu.Lock()
		stepped += st.Tokens
		mu.Unlock()
	})
	defer sc.Close()
	s := m.NewStream()
	defer s.Close()
	for _, p := range []string{"hi", "and then?"} {
		if err := s.QueuePrompt([]guard.Message{{Role: "user", Content: p}}); err != nil {
			t.Fatal(err)
		}
	}
	want := s.Pending()
	res, err := sc.Submit(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.Fed != want || stepped != want {
		t.Fatalf("%d tokens fed (%d queued); the steps reported %d", res.Fed, want, stepped)
	}
}
