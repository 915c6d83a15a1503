package server

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// ErrShuttingDown is returned for work submitted after Scheduler.Close.
var ErrShuttingDown = errors.New("server is shutting down")

// SchedulerOptions bound the batches.
type SchedulerOptions struct {
	// ChunkTokens caps the tokens one stream feeds per step
	// (StepOptions.MaxTokens), so that a long prompt prefill is spread over
	// several steps. 0 means 64.
	ChunkTokens int
	// MaxBatchTokens caps the tokens of one step; a stream whose chunk does
	// not fit waits for the next step (the first stream always fits).
	// 0 means 1024.
	MaxBatchTokens int
	// MaxBatchStreams caps the streams of one step; 1 turns batching off.
	// 0 means no cap.
	MaxBatchStreams int
	// GatherMax bounds how long a step waits for the streams of the
	// previous step to come back with their next tokens (see gather).
	// 0 means 20ms; negative turns the wait off.
	GatherMax time.Duration
}

func (o SchedulerOptions) withDefaults() SchedulerOptions {
	if o.ChunkTokens <= 0 {
		o.ChunkTokens = 64
	}
	if o.MaxBatchTokens <= 0 {
		o.MaxBatchTokens = 1024
	}
	if o.GatherMax == 0 {
		o.GatherMax = 20 * time.Millisecond
	}
	return o
}

// StepStats describes one step, for metrics.
type StepStats struct {
	Streams, Tokens int
	Duration        time.Duration
	// QueueWaits are, for each job that took part in a step for the first
	// time, how long it waited since it was submitted.
	QueueWaits []time.Duration
}

// Scheduler runs continuous batching: one goroutine steps every stream
// with queued work together.
type Scheduler struct {
	m      *guard.Model
	opts   SchedulerOptions
	onStep func(StepStats)

	// gate is held by tests to keep the loop from picking a batch, so that
	// the jobs submitted meanwhile all land in one step.
	gate    sync.Mutex
	mu      sync.Mutex
	wake    *sync.Cond
	pending []*job // FIFO by submission
	// chunk is the most tokens a stream feeds in the step pick chose
	// (ChunkTokens, or less where the oldest prefill's chunk was cut).
	chunk   int
	closing bool
	// cohort are the streams whose operation the last step finished, and
	// lastStep that step's end and duration: see gather.
	cohort   map[*guard.Stream]bool
	lastEnd  time.Time
	lastStep time.Duration
	done     chan struct{}
}

// job is one operation on one stream: the tokens queued on it before
// Submit, run until the stream's queue is empty.
type job struct {
	s         *guard.Stream
	submitted time.Time
	started   bool // took part in a step
	inStep    bool
	cancelled error
	acc       Result
	done      chan error
}

// Result is what an operation produced: the prompt verdict if it reached
// the end of a user turn, and the verdicts on the response tokens judged.
type Result struct {
	Prompt *guard.PromptVerdict
	Tokens []guard.TokenVerdict
	// Fed counts the tokens fed, prompt and scaffold included.
	Fed int
}

// NewScheduler starts the scheduler goroutine. onStep, when not nil, is
// called from that goroutine after every forward, before the step's
// streams are answered.
func NewScheduler(m *guard.Model, opts SchedulerOptions, onStep func(StepStats)) *Scheduler {
	sc := &Scheduler{m: m, opts: opts.withDefaults(), onStep: onStep, done: make(chan struct{})}
	sc.wake = sync.NewCond(&sc.mu)
	go sc.loop()
	return sc
}

// Submit runs the work queued on s and returns its results. The caller
// must not queue more on s until Submit returns. When ctx ends first, the
// stream is closed (its state is no longer known to the caller) and
// Submit returns once the scheduler has let go of it, with ctx's error.
func (sc *Scheduler) Submit(ctx context.Context, s *guard.Stream) (Result, error) {
	j := &job{s: s, submitted: time.Now(), done: make(chan error, 1)}
	sc.mu.Lock()
	if sc.closing {
		sc.mu.Unlock()
		return Result{}, ErrShuttingDown
	}
	sc.pending = append(sc.pending, j)
	sc.wake.Broadcast()
	sc.mu.Unlock()
	select {
	case err := <-j.done:
		return j.acc, err
	case <-ctx.Done():
	}
	sc.mu.Lock()
	if i := slices.Index(sc.pending, j); i >= 0 && !j.inStep {
		sc.pending = slices.Delete(sc.pending, i, i+1)
		s.Close()
		j.done <- ctx.Err()
	} else if i >= 0 {
		j.cancelled = ctx.Err() // the loop closes it after the step
	}
	sc.mu.Unlock()
	err := <-j.done
	if err == nil {
		return j.acc, nil // finished while we were cancelling
	}
	return Result{}, err
}

// Close stops accepting work, lets the submitted work finish, and stops
// the goroutine.
func (sc *Scheduler) Close() {
	sc.mu.Lock()
	sc.closing = true
	sc.wake.Broadcast()
	sc.mu.Unlock()
	<-sc.done
}

// queued is the number of jobs waiting or running.
func (sc *Scheduler) queued() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.pending)
}

func (sc *Scheduler) loop() {
	defer close(sc.done)
	for {
		sc.mu.Lock()
		for len(sc.pending) == 0 && !sc.closing {
			sc.wake.Wait()
		}
		if len(sc.pending) == 0 {
			sc.mu.Unlock()
			return
		}
		sc.mu.Unlock()
		sc.gate.Lock()
		sc.mu.Lock()
		sc.gate.Unlock()
		sc.gather()
		if len(sc.pending) == 0 { // cancelled meanwhile
			sc.mu.Unlock()
			continue
		}
		batch := sc.pick()
		chunk := sc.chunk
		sc.mu.Unlock()
		sc.step(batch, chunk)
	}
}

// gather waits, briefly, for the streams the last step answered to submit
// their next operation, so that the step takes them too. Without it a
// batch splits into two cohorts that alternate: the step starts with
// whatever is pending the moment the previous one ends, while the clients
// just answered are still sending their next tokens. The wait is at most
// an eighth of the last step's duration (and GatherMax), so it costs
// little latency, and it ends as soon as the whole cohort is back. Called
// with mu held.
func (sc *Scheduler) gather() {
	if sc.opts.GatherMax < 0 || len(sc.cohort) == 0 || sc.closing {
		return
	}
	deadline := sc.lastEnd.Add(min(sc.lastStep/8, sc.opts.GatherMax))
	back := func() int {
		n := 0
		for _, j := range sc.pending {
			if sc.cohort[j.s] {
				n++
			}
		}
		return n
	}
	for back() < len(sc.cohort) && !sc.closing {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		t := time.AfterFunc(wait, func() {
			sc.mu.Lock()
			sc.wake.Broadcast()
			sc.mu.Unlock()
		})
		sc.wake.Wait()
		t.Stop()
	}
	sc.cohort = nil
}

// pick chooses the jobs of the next step, and sets sc.chunk, the most
// tokens each feeds in it: first the short chunks (a streamed token's, at
// most shortChunk), oldest first, then prefill chunks, oldest first, in
// the room left; a job whose chunk does not fit waits. Short chunks go
// first so that a token never waits behind other streams' prefills
// (sixteen long prompts would otherwise fill every step until they are
// all fed, whoever sent them); while a prefill waits they leave it room
// (and a stream), and the oldest prefill goes in whatever room is left,
// its chunk cut to fit: prefills go on however many streams stream.
// Called with mu held.
func (sc *Scheduler) pick() []*job {
	o := sc.opts
	sc.chunk = o.ChunkTokens
	if o.MaxBatchStreams == 1 || o.MaxBatchTokens <= 1 || len(sc.pending) == 1 {
		// One stream a step: the oldest, whatever its chunk, so that
		// streamed tokens cannot hold a prefill back forever.
		j := sc.pending[0]
		j.inStep = true
		return []*job{j}
	}
	chunks := make([]int, len(sc.pending))
	prefill := false
	for i, j := range sc.pending {
		chunks[i] = min(j.s.Pending(), o.ChunkTokens)
		prefill = prefill || chunks[i] > shortChunk
	}
	var batch []*job
	tokens := 0
	tokenRoom, streamRoom := o.MaxBatchTokens, o.MaxBatchStreams
	if prefill {
		tokenRoom -= max(1, min(o.ChunkTokens, o.MaxBatchTokens/2))
		if streamRoom > 1 {
			streamRoom--
		}
	}
	for i, j := range sc.pending { // the short chunks
		n := chunks[i]
		if n > shortChunk {
			continue
		}
		if streamRoom > 0 && len(batch) >= streamRoom {
			break
		}
		if len(batch) > 0 && tokens+n > tokenRoom {
			continue
		}
		tokens += n
		j.inStep = true
		batch = append(batch, j)
	}
	first := true
	for i, j := range sc.pending { // the prefills
		n := chunks[i]
		if n <= shortChunk {
			continue
		}
		if o.MaxBatchStreams > 0 && len(batch) >= o.MaxBatchStreams {
			break
		}
		if room := max(1, o.MaxBatchTokens-tokens); first && len(batch) > 0 && n > room {
			// The oldest prefill, with a chunk cut to the room left
			// (at least 1, even where a lone short chunk took more
			// than the cap). Every stream of the step takes at most
			// that many tokens.
			sc.chunk, n = room, room
		}
		n = min(n, sc.chunk)
		if !first && tokens+n > o.MaxBatchTokens {
			continue
		}
		first = false
		tokens += n
		j.inStep = true
		batch = append(batch, j)
	}
	return batch
}

// shortChunk is the most tokens of a chunk pick takes for a streamed
// token's: a few tokens of text, with the assistant header (up to 8) when
// it opens the response.
const shortChunk = 16

// step runs one forward over batch, each stream feeding at most chunk
// tokens.
func (sc *Scheduler) step(batch []*job, chunk int) {
	streams := make([]*guard.Stream, len(batch))
	stats := StepStats{Streams: len(batch)}
	now := time.Now()
	for i, j := range batch {
		streams[i] = j.s
		if !j.started {
			j.started = true
			stats.QueueWaits = append(stats.QueueWaits, now.Sub(j.submitted))
		}
	}
	// A step serves many requests: each one's cancellation is Submit's to
	// handle, so the forward itself is not cancelled.
	results, err := sc.m.Step(context.Background(), streams, guard.StepOptions{MaxTokens: chunk})
	stats.Duration = time.Since(now)
	// What the step fed, which can be less than chunk of what was queued
	// (a step stops before a second user turn's end).
	for _, r := range results {
		stats.Tokens += r.Fed
	}
	// Report the step before answering its streams, so that whoever has
	// an answer also finds the step in the metrics.
	if sc.onStep != nil {
		sc.onStep(stats)
	}

	sc.mu.Lock()
	sc.lastEnd, sc.lastStep = time.Now(), stats.Duration
	sc.cohort = make(map[*guard.Stream]bool, len(batch))
	for i, j := range batch {
		j.inStep = false
		jerr := err
		if jerr == nil {
			jerr = results[i].Err // this stream's own failure (its scores)
		}
		finished := jerr != nil || j.cancelled != nil
		if jerr == nil {
			r := results[i]
			if r.Prompt != nil {
				j.acc.Prompt = r.Prompt
			}
			j.acc.Tokens = append(j.acc.Tokens, r.Tokens...)
			j.acc.Fed += r.Fed
			finished = finished || j.s.Pending() == 0
		}
		if !finished {
			continue
		}
		if k := slices.Index(sc.pending, j); k >= 0 {
			sc.pending = slices.Delete(sc.pending, k, k+1)
		}
		switch {
		case j.cancelled != nil:
			j.s.Close()
			j.done <- j.cancelled
		case jerr != nil:
			// A failed forward leaves the stream's cache in an unknown
			// state: it cannot be continued.
			j.s.Close()
			j.done <- jerr
		default:
			sc.cohort[j.s] = true
			j.done <- nil
		}
	}
	sc.mu.Unlock()
}
