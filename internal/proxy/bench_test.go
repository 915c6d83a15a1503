package proxy

import (
	"testing"
	"time"
)

// BenchmarkRelay streams 64 one-token deltas from the fake upstream,
// directly and through the proxy in each mode, on the tiny model (cheap
// enough for one iteration in CI; TestLatency measures the 0.6B shape).
func BenchmarkRelay(b *testing.B) {
	m := tinyModel(b)
	const n = 64
	up := newFakeUpstream(b, upstreamSpec{Content: wordDeltas(n)})
	for _, name := range []string{"direct", "pass-through", "hold-back"} {
		b.Run(name, func(b *testing.B) {
			url := up.URL
			var p *testProxy
			if name != "direct" {
				mode, _ := ParseMode(name)
				p = newTestProxy(b, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
				url = p.URL
			}
			var last time.Duration
			for b.Loop() {
				at := timedStream(b, url)
				if len(at) != n {
					b.Fatalf("%d content events", len(at))
				}
				last += at[n-1]
				if p != nil {
					p.wait(b, 1)
				}
			}
			b.ReportMetric(float64(last.Nanoseconds())/float64(b.N*n), "ns/token")
		})
	}
}
