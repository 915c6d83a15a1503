package server

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// metrics are written in the Prometheus text format (version 0.0.4) by
// hand: the handful of counters, gauges and histograms here do not need
// the client library and the dependencies it brings.
type metrics struct {
	mu       sync.Mutex
	requests map[[3]string]uint64 // tenant, route, status code
	rejects  map[string]uint64    // reason
	verdicts map[[3]string]uint64 // head, level, category
	proxy    map[[3]string]uint64 // tenant, event, ""

	openStreams      atomic.Int64
	openConns        atomic.Int64 // counted by Serve's listener
	fed, judged      atomic.Uint64
	accepted         atomic.Int64 // requests and duplex operations taken
	answered         atomic.Int64 // ... and answered
	batchStreams     *histogram
	batchTokens      *histogram
	queueWait        *histogram
	stepSeconds      *histogram
	steps            atomic.Uint64
	kvUsed           func() (used, limit int64)
	kvWaits          func() (budgetWaits, int)
	kvBytesPerPos    int64
	sessionsOpen     func() int
	shutdownStarted  atomic.Bool
	maxBatchObserved atomic.Int64

	resumed atomic.Uint64 // streams opened by resume

	device, deviceNote string // where the model runs, and why not on a GPU (auto)
}

func newMetrics() *metrics {
	return &metrics{
		requests: map[[3]string]uint64{}, rejects: map[string]uint64{}, verdicts: map[[3]string]uint64{}, proxy: map[[3]string]uint64{},
		batchStreams: newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
		batchTokens:  newHistogram(1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096),
		queueWait:    newHistogram(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
		stepSeconds:  newHistogram(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
	}
}

func (m *metrics) request(tenant, route string, code int) {
	c := strconv.Itoa(code)
	if code < 100 || code > 599 {
		c = "other" // one series, whatever number a caller put there
	}
	m.mu.Lock()
	m.requests[[3]string{tenant, route, c}]++
	m.mu.Unlock()
}

func (m *metrics) rejected(reason string) {
	m.mu.Lock()
	m.rejects[reason]++
	m.mu.Unlock()
}

// verdict counts one verdict; the category counts only when the level is
// not the safe one (index 0), since the category heads mean nothing there.
func (m *metrics) verdict(head string, riskIndex int, level, category string) {
	if riskIndex == 0 {
		category = ""
	}
	m.mu.Lock()
	m.verdicts[[3]string{head, level, category}]++
	m.mu.Unlock()
}

func (m *metrics) proxyOutcome(tenant, event string) {
	m.mu.Lock()
	m.proxy[[3]string{tenant, event, ""}]++
	m.mu.Unlock()
}

func (m *metrics) step(st StepStats) {
	m.steps.Add(1)
	m.batchStreams.observe(float64(st.Streams))
	m.batchTokens.observe(float64(st.Tokens))
	m.stepSeconds.observe(st.Duration.Seconds())
	for _, w := range st.QueueWaits {
		m.queueWait.observe(w.Seconds())
	}
	for {
		cur := m.maxBatchObserved.Load()
		if int64(st.Streams) <= cur || m.maxBatchObserved.CompareAndSwap(cur, int64(st.Streams)) {
			break
		}
	}
}

// write renders every metric.
func (m *metrics) write(w io.Writer) error {
	var b strings.Builder
	m.mu.Lock()
	requests := maps.Clone(m.requests)
	rejects := maps.Clone(m.rejects)
	verdicts := maps.Clone(m.verdicts)
	proxied := maps.Clone(m.proxy)
	m.mu.Unlock()

	header(&b, "streamguard_device_info", "gauge", "Where the model runs (device) and, with --device auto on the CPU, why no GPU (note); always 1.")
	fmt.Fprintf(&b, "streamguard_device_info{device=%s,note=%s} 1\n", q(m.device), q(m.deviceNote))
	header(&b, "streamguard_requests_total", "counter", "HTTP requests by tenant, route and status code.")
	for _, k := range sortedKeys(requests) {
		fmt.Fprintf(&b, "streamguard_requests_total{tenant=%s,route=%s,code=%s} %d\n", q(k[0]), q(k[1]), q(k[2]), requests[k])
	}
	header(&b, "streamguard_rejected_total", "counter", "Requests refused by a limit, by reason.")
	for _, k := range slices.Sorted(maps.Keys(rejects)) {
		fmt.Fprintf(&b, "streamguard_rejected_total{reason=%s} %d\n", q(k), rejects[k])
	}
	header(&b, "streamguard_verdicts_total", "counter", "Verdicts by head (prompt or response), risk level and category (empty when the level is safe).")
	for _, k := range sortedKeys(verdicts) {
		fmt.Fprintf(&b, "streamguard_verdicts_total{head=%s,level=%s,category=%s} %d\n", q(k[0]), q(k[1]), q(k[2]), verdicts[k])
	}
	if len(proxied) > 0 {
		header(&b, "streamguard_proxy_requests_total", "counter", "Proxied chat completions by tenant and outcome.")
		for _, k := range sortedKeys(proxied) {
			fmt.Fprintf(&b, "streamguard_proxy_requests_total{tenant=%s,event=%s} %d\n", q(k[0]), q(k[1]), proxied[k])
		}
	}
	header(&b, "streamguard_open_streams", "gauge", "Streams open now (sessions, duplex connections, requests in progress).")
	fmt.Fprintf(&b, "streamguard_open_streams %d\n", m.openStreams.Load())
	if m.sessionsOpen != nil {
		header(&b, "streamguard_sessions", "gauge", "Streams reachable by id.")
		fmt.Fprintf(&b, "streamguard_sessions %d\n", m.sessionsOpen())
	}
	header(&b, "streamguard_streams_resumed_total", "counter", "Streams opened by resume: a lost stream replayed from the conversation so far.")
	fmt.Fprintf(&b, "streamguard_streams_resumed_total %d\n", m.resumed.Load())
	header(&b, "streamguard_tokens_fed_total", "counter", "Tokens fed to the model: prompts, chat scaffold and responses.")
	fmt.Fprintf(&b, "streamguard_tokens_fed_total %d\n", m.fed.Load())
	header(&b, "streamguard_tokens_judged_total", "counter", "Response tokens judged.")
	fmt.Fprintf(&b, "streamguard_tokens_judged_total %d\n", m.judged.Load())
	header(&b, "streamguard_work_accepted_total", "counter", "Requests and duplex operations accepted.")
	fmt.Fprintf(&b, "streamguard_work_accepted_total %d\n", m.accepted.Load())
	header(&b, "streamguard_work_answered_total", "counter", "Requests and duplex operations answered.")
	fmt.Fprintf(&b, "streamguard_work_answered_total %d\n", m.answered.Load())
	header(&b, "streamguard_steps_total", "counter", "Batched forward steps run.")
	fmt.Fprintf(&b, "streamguard_steps_total %d\n", m.steps.Load())
	header(&b, "streamguard_batch_streams_max", "gauge", "Largest number of streams in one step so far.")
	fmt.Fprintf(&b, "streamguard_batch_streams_max %d\n", m.maxBatchObserved.Load())
	m.batchStreams.write(&b, "streamguard_batch_streams", "Streams per step.")
	m.batchTokens.write(&b, "streamguard_batch_tokens", "Tokens per step.")
	m.queueWait.write(&b, "streamguard_queue_wait_seconds", "Time from an operation's submission to its first step.")
	m.stepSeconds.write(&b, "streamguard_step_seconds", "Duration of one batched forward step.")
	if m.kvUsed != nil {
		used, limit := m.kvUsed()
		header(&b, "streamguard_kv_reserved_bytes", "gauge", "KV-cache memory charged to open streams (upper bound of what their caches hold).")
		fmt.Fprintf(&b, "streamguard_kv_reserved_bytes %d\n", used*m.kvBytesPerPos)
		header(&b, "streamguard_kv_budget_bytes", "gauge", "KV-cache budget (0: unlimited).")
		fmt.Fprintf(&b, "streamguard_kv_budget_bytes %d\n", limit*m.kvBytesPerPos)
	}
	if m.kvWaits != nil {
		w, waiting := m.kvWaits()
		header(&b, "streamguard_kv_budget_waiting", "gauge", "Requests waiting now for KV-cache memory.")
		fmt.Fprintf(&b, "streamguard_kv_budget_waiting %d\n", waiting)
		header(&b, "streamguard_kv_budget_waits_total", "counter", "Requests that waited for KV-cache memory, by outcome (granted, or refused with 429 when the wait ended).")
		fmt.Fprintf(&b, "streamguard_kv_budget_waits_total{outcome=\"granted\"} %d\n", w.granted)
		fmt.Fprintf(&b, "streamguard_kv_budget_waits_total{outcome=\"refused\"} %d\n", w.refused)
		header(&b, "streamguard_kv_budget_wait_seconds_total", "counter", "Seconds requests spent waiting for KV-cache memory.")
		fmt.Fprintf(&b, "streamguard_kv_budget_wait_seconds_total %g\n", w.seconds)
	}
	header(&b, "streamguard_open_connections", "gauge", "Client connections open now (served by Serve).")
	fmt.Fprintf(&b, "streamguard_open_connections %d\n", m.openConns.Load())
	if rss := residentBytes(); rss > 0 {
		header(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
		fmt.Fprintf(&b, "process_resident_memory_bytes %d\n", rss)
	}
	header(&b, "streamguard_draining", "gauge", "1 while the server shuts down.")
	fmt.Fprintf(&b, "streamguard_draining %d\n", b2i(m.shutdownStarted.Load()))
	_, err := io.WriteString(w, b.String())
	return err
}

// residentBytes is this process's resident set (Linux /proc/self/statm),
// 0 when unknown.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func header(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// q quotes a label value: backslash, double quote and newline escaped.
func q(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func sortedKeys(m map[[3]string]uint64) [][3]string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b [3]string) int {
		for i := range a {
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	return keys
}

// histogram is a Prometheus histogram with fixed upper bounds.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // per bucket, not cumulative; last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v) // first bound >= v: le is inclusive
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

func (h *histogram) write(b *strings.Builder, name, help string) {
	h.mu.Lock()
	counts := slices.Clone(h.counts)
	sum, n := h.sum, h.n
	h.mu.Unlock()
	header(b, name, "histogram", help)
	var cum uint64
	for i, ub := range h.bounds {
		cum += counts[i]
		fmt.Fprintf(b, "%s_bucket{le=%s} %d\n", name, q(strconv.FormatFloat(ub, 'g', -1, 64)), cum)
	}
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n", name, n)
	fmt.Fprintf(b, "%s_sum %s\n", name, strconv.FormatFloat(sum, 'g', -1, 64))
	fmt.Fprintf(b, "%s_count %d\n", name, n)
}
