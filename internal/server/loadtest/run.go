package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// Options configure a load test.
type Options struct {
	Model string // model folder: the server's and the reference's
	// Device runs both the server and the solo reference there
	// (guard.Options.Device; "" is the CPU): verdicts are compared on one
	// device, where batching must not change them.
	Device string
	// Exe is the streamguard binary that serves (normally this process's).
	Exe string
	// ServeArgs are extra `serve` flags (budget, chunking, ...).
	ServeArgs []string
	// Streams is the number of concurrent conversations.
	Streams int
	// Duration is the main phase's length; Baseline the length of the
	// phase with batching off (0: none).
	Duration, Baseline time.Duration
	// SIGTERM ends the main phase by sending SIGTERM to the server while
	// the load goes on.
	SIGTERM bool
	// Conversations is the number of distinct scripts; PromptWords and
	// ResponseTokens their sizes.
	Conversations, PromptWords, ResponseTokens int
	// DuplexEvery makes every n-th worker use the duplex connection
	// (0: none).
	DuplexEvery int
	Seed        uint64
	// SlowClients send a moderation body one byte every SlowEvery, and
	// IdleConns open connections that send nothing, during the batched
	// phase (see StallReport).
	SlowClients, IdleConns int
	SlowEvery              time.Duration
	// WorkDir receives the servers' logs.
	WorkDir  string
	Progress io.Writer
}

// PhaseReport is one phase's measurements.
type PhaseReport struct {
	Name            string  `json:"name"`
	MaxBatchStreams int     `json:"max_batch_streams"` // 0: no cap
	Streams         int     `json:"streams"`
	Seconds         float64 `json:"seconds"`
	// RampUpSeconds is the time until every stream's first prompt was
	// judged; the measured window starts after it.
	RampUpSeconds float64 `json:"ramp_up_seconds"`
	Conversations int64   `json:"conversations"` // completed and checked
	// Checked counts conversations compared with the solo run, including
	// those cut by the deadline or SIGTERM (their verdicts so far).
	Checked         int64   `json:"checked"`
	Tokens          int64   `json:"tokens"` // judged within the phase window
	TokensPerSecond float64 `json:"tokens_per_second"`
	Appends         int64   `json:"appends"`
	AppendP50Ms     float64 `json:"append_p50_ms"` // per-token latency: one token per append
	AppendP99Ms     float64 `json:"append_p99_ms"`
	// Opening a conversation: from its first request to its prompt's
	// verdict, 429s and their retries included (conversations opened
	// within the window).
	OpenP50Ms   float64 `json:"open_p50_ms"`
	OpenP99Ms   float64 `json:"open_p99_ms"`
	OpenMaxMs   float64 `json:"open_max_ms"`
	Rejected429 int64   `json:"rejected_429"`
	// Requests that waited for KV-cache memory (the server's
	// --kv-budget-wait), by outcome, and the seconds they waited in all.
	KVWaitsGranted  int64    `json:"kv_waits_granted"`
	KVWaitsRefused  int64    `json:"kv_waits_refused"`
	KVWaitSeconds   float64  `json:"kv_wait_seconds"`
	Errors          int64    `json:"errors"`
	ErrorSamples    []string `json:"error_samples,omitempty"`
	Mismatches      int64    `json:"mismatches"`
	MismatchSamples []string `json:"mismatch_samples,omitempty"`
	// Batch sizes from the server's metrics.
	Steps           int64             `json:"steps"`
	BatchMax        int64             `json:"batch_streams_max"`
	BatchMean       float64           `json:"batch_streams_mean"`
	BatchTokensMean float64           `json:"batch_tokens_mean"`
	BatchHistogram  map[string]uint64 `json:"batch_streams_histogram"`
	// Memory: the server's largest resident set, and the KV memory its
	// budget had charged at most.
	MaxRSSBytes int64 `json:"max_rss_bytes"`
	// RSSStartBytes is the server's resident set (VmRSS of
	// /proc/PID/status) once it listens, before any load; RSSEndBytes at
	// the end of the measured window, before the server is stopped.
	RSSStartBytes      int64          `json:"rss_start_bytes"`
	RSSEndBytes        int64          `json:"rss_end_bytes"`
	Stalled            *StallReport   `json:"stalled,omitempty"`
	MaxKVReservedBytes int64          `json:"max_kv_reserved_bytes"`
	KVBudgetBytes      int64          `json:"kv_budget_bytes"`
	Shutdown           *ShutdownCheck `json:"shutdown,omitempty"`
}

// ShutdownCheck compares what the server accepted and answered with what
// the clients received, after a SIGTERM under load.
type ShutdownCheck struct {
	ServerAccepted int64 `json:"server_accepted"`
	ServerAnswered int64 `json:"server_answered"`
	ClientAnswers  int64 `json:"client_answers"`
	// RefusedAfter counts requests that found the server gone (not
	// accepted: connection refused or closed before the request was read).
	RefusedAfter int64  `json:"refused_after"`
	ExitStatus   string `json:"exit_status"`
	OK           bool   `json:"ok"`
}

// Report is the whole run.
type Report struct {
	Model            string        `json:"model"`
	Device           string        `json:"device"` // where the reference ran (and the server was asked to)
	Streams          int           `json:"streams"`
	ReferenceSeconds float64       `json:"reference_seconds"`
	Phases           []PhaseReport `json:"phases"`
	// Ratio is the main phase's throughput over the baseline's.
	Ratio         float64 `json:"batching_throughput_ratio,omitempty"`
	LoadAvgBefore string  `json:"loadavg_before"`
	LoadAvgAfter  string  `json:"loadavg_after"`
	OK            bool    `json:"ok"`
}

// Run runs the load test.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Streams < 1 || o.Duration <= 0 || o.Conversations < 1 {
		return nil, errors.New("loadtest: streams, duration and conversations must be positive")
	}
	logf := func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, err
	}
	rep := &Report{Model: o.Model, Streams: o.Streams, LoadAvgBefore: loadavg()}
	t0 := time.Now()
	m, err := guard.Load(ctx, o.Model, guard.Options{Device: o.Device})
	if err != nil {
		return nil, err
	}
	rep.Device = m.Info().Device
	scripts := makeScripts(m, o.Conversations, o.PromptWords, o.ResponseTokens, o.Seed)
	err = solo(ctx, m, scripts)
	m.Close()
	if err != nil {
		return nil, err
	}
	rep.ReferenceSeconds = time.Since(t0).Seconds()
	logf("reference: %d conversations judged solo in %.1fs", len(scripts), rep.ReferenceSeconds)

	if o.Baseline > 0 {
		pr, err := runPhase(ctx, o, scripts, "baseline (one stream per step)", 1, o.Baseline, false, logf)
		if err != nil {
			return nil, err
		}
		rep.Phases = append(rep.Phases, *pr)
	}
	pr, err := runPhase(ctx, o, scripts, "batched", 0, o.Duration, o.SIGTERM, logf)
	if err != nil {
		return nil, err
	}
	rep.Phases = append(rep.Phases, *pr)
	if o.Baseline > 0 && rep.Phases[0].TokensPerSecond > 0 {
		rep.Ratio = pr.TokensPerSecond / rep.Phases[0].TokensPerSecond
	}
	rep.LoadAvgAfter = loadavg()
	rep.OK = true
	for _, p := range rep.Phases {
		if p.Errors > 0 || p.Mismatches > 0 || p.Checked == 0 || (p.Shutdown != nil && !p.Shutdown.OK) {
			rep.OK = false
		}
	}
	return rep, nil
}

// server is a spawned `streamguard serve`.
type server struct {
	cmd      *exec.Cmd
	base     string
	pid      int
	budget   int64
	shutdown chan map[string]any // the shutdown report line
	exited   chan error
}

func startServer(ctx context.Context, o Options, name string, maxBatch int) (*server, error) {
	args := []string{"serve", "--model", o.Model, "--addr", "127.0.0.1:0", "--json"}
	if o.Device != "" {
		args = append(args, "--device", o.Device)
	}
	args = append(args, o.ServeArgs...)
	if maxBatch > 0 {
		args = append(args, "--max-batch-streams", strconv.Itoa(maxBatch))
	}
	cmd := exec.Command(o.Exe, args...)
	logName := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(name)
	errf, err := os.Create(fmt.Sprintf("%s/serve-%s.log", o.WorkDir, logName))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = errf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, pid: cmd.Process.Pid, shutdown: make(chan map[string]any, 1), exited: make(chan error, 1)}
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			switch ev["event"] {
			case "listening":
				listening <- ev
			case "shutdown":
				s.shutdown <- ev
			}
		}
		s.exited <- cmd.Wait()
		errf.Close()
	}()
	select {
	case ev := <-listening:
		s.base = "http://" + ev["addr"].(string)
		if b, ok := ev["kv_budget_bytes"].(float64); ok {
			s.budget = int64(b)
		}
	case err := <-s.exited:
		return nil, fmt.Errorf("serve exited before listening (%v); see %s", err, errf.Name())
	case <-time.After(10 * time.Minute):
		cmd.Process.Kill()
		return nil, errors.New("serve did not start within 10 minutes")
	case <-ctx.Done():
		cmd.Process.Kill()
		return nil, ctx.Err()
	}
	return s, nil
}

// stop sends SIGTERM and waits for the shutdown report and the exit.
func (s *server) stop() (map[string]any, error) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	var ev map[string]any
	select {
	case ev = <-s.shutdown:
	case <-time.After(5 * time.Minute):
		s.cmd.Process.Kill()
		return nil, errors.New("serve did not shut down within 5 minutes")
	}
	return ev, <-s.exited
}

func runPhase(ctx context.Context, o Options, scripts []*script, name string, maxBatch int, d time.Duration, sigterm bool, logf func(string, ...any)) (*PhaseReport, error) {
	srv, err := startServer(ctx, o, name, maxBatch)
	if err != nil {
		return nil, err
	}
	logf("%s: serve pid %d on %s; %d streams for %s", name, srv.pid, srv.base, o.Streams, d)
	pr := &PhaseReport{Name: name, MaxBatchStreams: maxBatch, Streams: o.Streams, KVBudgetBytes: srv.budget, RSSStartBytes: rss(srv.pid)}
	var stall *stallers
	if maxBatch == 0 && (o.SlowClients > 0 || o.IdleConns > 0) {
		every := o.SlowEvery
		if every <= 0 {
			every = 5 * time.Second
		}
		if stall, err = startStallers(srv.base, o.SlowClients, every, o.IdleConns); err != nil {
			return nil, err
		}
		logf("%s: %d slow clients (a byte every %s), %d idle connections", name, o.SlowClients, every, o.IdleConns)
	}
	ps := &phaseState{base: srv.base, client: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        4 * o.Streams,
		MaxIdleConnsPerHost: 4 * o.Streams,
		DisableCompression:  true,
	}}, duplexClient: &http.Client{Transport: &http.Transport{
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}}}

	// Sample the server's memory and KV charge once a second.
	sampleDone := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			pr.MaxRSSBytes = max(pr.MaxRSSBytes, rss(srv.pid))
			if v, ok := scrape(ps, "streamguard_kv_reserved_bytes"); ok {
				pr.MaxKVReservedBytes = max(pr.MaxKVReservedBytes, int64(v))
			}
			select {
			case <-sampleDone:
				return
			case <-t.C:
			}
		}
	})

	start := time.Now()
	win := newWindow(o.Streams, d)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat, openLat []float64
	var counts struct{ convs, checked, tokens, appends, errors, mismatches int64 }
	for w := range o.Streams {
		wg.Go(func() {
			wk := &worker{ps: ps, id: w, scripts: scripts, win: win, duplex: o.DuplexEvery > 0 && w%o.DuplexEvery == o.DuplexEvery-1, text: w%2 == 1, untilGone: sigterm, abandon: maxBatch == 1}
			wk.run(wctx, o.Streams)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, wk.lat...)
			openLat = append(openLat, wk.openLat...)
			counts.convs += wk.convs
			counts.checked += wk.checked
			counts.tokens += wk.tokens
			counts.appends += int64(len(wk.lat))
			counts.errors += int64(len(wk.errs))
			counts.mismatches += int64(len(wk.mismatches))
			for _, e := range wk.errs {
				if len(pr.ErrorSamples) < 10 {
					pr.ErrorSamples = append(pr.ErrorSamples, e)
				}
			}
			for _, e := range wk.mismatches {
				if len(pr.MismatchSamples) < 10 {
					pr.MismatchSamples = append(pr.MismatchSamples, e)
				}
			}
		})
	}
	// Ramp-up: every stream's first prompt is judged before the window
	// opens (at most 15 minutes).
	select {
	case <-win.openedCh:
	case <-time.After(15 * time.Minute):
		win.open(time.Now())
	}
	pr.RampUpSeconds = time.Since(start).Seconds()
	logf("%s: ramp-up (every stream's first prompt judged) took %.1fs; measuring for %s", name, pr.RampUpSeconds, d)
	deadline := time.Unix(0, win.end.Load())
	var shut map[string]any
	var exitErr error
	if sigterm {
		time.Sleep(time.Until(deadline))
		// Batch sizes before the server goes away.
		pr.readBatches(ps)
		pr.RSSEndBytes = rss(srv.pid)
		ps.sigterm.Store(true)
		if stall != nil {
			stall.serverStopping()
		}
		logf("%s: SIGTERM under load", name)
		shut, exitErr = srv.stop()
		wg.Wait()
	} else {
		wg.Wait()
		pr.readBatches(ps)
		pr.RSSEndBytes = rss(srv.pid)
		if stall != nil {
			stall.serverStopping()
		}
		shut, exitErr = srv.stop()
	}
	if stall != nil {
		sr := stall.halt()
		pr.Stalled = &sr
	}
	close(sampleDone)
	sampler.Wait()
	pr.Seconds = d.Seconds()
	pr.Checked = counts.checked
	pr.Conversations, pr.Tokens, pr.Appends, pr.Errors, pr.Mismatches = counts.convs, counts.tokens, counts.appends, counts.errors, counts.mismatches
	pr.TokensPerSecond = float64(pr.Tokens) / pr.Seconds
	pr.Rejected429 = ps.rejected.Load()
	slices.Sort(lat)
	pr.AppendP50Ms, pr.AppendP99Ms = percentile(lat, 0.50)*1e3, percentile(lat, 0.99)*1e3
	slices.Sort(openLat)
	pr.OpenP50Ms, pr.OpenP99Ms, pr.OpenMaxMs = percentile(openLat, 0.50)*1e3, percentile(openLat, 0.99)*1e3, percentile(openLat, 1)*1e3
	if sigterm {
		sc := &ShutdownCheck{ClientAnswers: ps.answers.Load(), RefusedAfter: ps.refused.Load(), ExitStatus: fmt.Sprint(exitErr)}
		if shut != nil {
			sc.ServerAccepted, sc.ServerAnswered = int64(num(shut["accepted"])), int64(num(shut["answered"]))
		}
		sc.OK = exitErr == nil && sc.ServerAccepted == sc.ServerAnswered && sc.ServerAnswered == sc.ClientAnswers
		pr.Shutdown = sc
	} else if exitErr != nil {
		return nil, fmt.Errorf("%s: serve exited with %v", name, exitErr)
	}
	logf("%s: server RSS %.0f MiB at start, %.0f MiB at the end of the window", name, float64(pr.RSSStartBytes)/(1<<20), float64(pr.RSSEndBytes)/(1<<20))
	logf("%s: %d conversations completed, %d checked, %.0f tokens/s, append p50 %.1fms p99 %.1fms, open p50 %.0fms max %.0fms, batch max %d mean %.1f, %d 429s, %d KV waits (%d refused), %d errors, %d mismatches, max RSS %.0f MiB",
		name, pr.Conversations, pr.Checked, pr.TokensPerSecond, pr.AppendP50Ms, pr.AppendP99Ms, pr.OpenP50Ms, pr.OpenMaxMs, pr.BatchMax, pr.BatchMean, pr.Rejected429, pr.KVWaitsGranted+pr.KVWaitsRefused, pr.KVWaitsRefused, pr.Errors, pr.Mismatches, float64(pr.MaxRSSBytes)/(1<<20))
	return pr, nil
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// readBatches reads the batch-size metrics.
func (pr *PhaseReport) readBatches(ps *phaseState) {
	body, err := metricsText(ps)
	if err != nil {
		return
	}
	pr.parseMetrics(body)
}

// parseMetrics takes the batch sizes and KV-budget waits from the
// server's /metrics text.
func (pr *PhaseReport) parseMetrics(body string) {
	var sum, count, tsum, tcount float64
	pr.BatchHistogram = map[string]uint64{}
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch {
		case name == "streamguard_steps_total":
			pr.Steps = int64(v)
		case name == "streamguard_batch_streams_max":
			pr.BatchMax = int64(v)
		case name == "streamguard_batch_streams_sum":
			sum = v
		case name == "streamguard_batch_streams_count":
			count = v
		case name == "streamguard_batch_tokens_sum":
			tsum = v
		case name == "streamguard_batch_tokens_count":
			tcount = v
		case name == `streamguard_kv_budget_waits_total{outcome="granted"}`:
			pr.KVWaitsGranted = int64(v)
		case name == `streamguard_kv_budget_waits_total{outcome="refused"}`:
			pr.KVWaitsRefused = int64(v)
		case name == "streamguard_kv_budget_wait_seconds_total":
			pr.KVWaitSeconds = v
		case strings.HasPrefix(name, "streamguard_batch_streams_bucket{le="):
			pr.BatchHistogram[strings.Trim(strings.TrimPrefix(name, "streamguard_batch_streams_bucket{le="), `"}`)] = uint64(v)
		}
	}
	if count > 0 {
		pr.BatchMean = sum / count
	}
	if tcount > 0 {
		pr.BatchTokensMean = tsum / tcount
	}
}

func metricsText(ps *phaseState) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ps.base+"/metrics", nil)
	resp, err := ps.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func scrape(ps *phaseState, metric string) (float64, bool) {
	body, err := metricsText(ps)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, metric+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// rss is a process's resident set in bytes (Linux), 0 when unknown.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
