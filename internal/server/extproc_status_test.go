package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestExtProcStatusLabelBounded: an ext_proc exchange is counted in
// streamguard_requests_total by the response's ":status". A holder of a
// tenant key who speaks ext_proc to the port chooses that value; numbers
// that are not HTTP statuses are read as 200 (the answer judged) and never
// become labels, so they cannot grow the series without bound.
func TestExtProcStatusLabelBounded(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: flagAndPassTenants(m, nil), KVBudgetBytes: 64 << 20})
	client := extProcClient(t, h)
	chat := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, testPrompt)
	const n = 30
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := epStream{t, st}
		if r := s.request("key-b", chat); r.GetRequestBody() == nil {
			t.Fatalf("tenant b: %v", r)
		}
		s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: epHeaders(map[string]string{":status": fmt.Sprint(100000000 + i)}, map[string]string{"content-type": "application/json"})}}})
		cancel()
	}
	// Let the sessions end (Done runs as each stream closes).
	var sb strings.Builder
	for range 200 {
		sb.Reset()
		h.srv.metrics.write(&sb)
		if strings.Contains(sb.String(), fmt.Sprintf(`tenant="b",route="ext_proc",code="200"} %d`, n)) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	series := 0
	for _, line := range strings.Split(sb.String(), "\n") {
		if strings.HasPrefix(line, `streamguard_requests_total{tenant="b",route="ext_proc"`) {
			series++
		}
	}
	if series != 1 {
		t.Errorf("%d exchanges made %d metric series: the code label takes any number the response's :status holds", n, series)
	}
}

// TestRequestCodeLabelBounded: a code that is not an HTTP status is
// counted under code="other", one series whatever the number.
func TestRequestCodeLabelBounded(t *testing.T) {
	m := newMetrics()
	for _, c := range []int{-7, 0, 99, 600, 123456789} {
		m.request("t", "r", c)
	}
	m.request("t", "r", 404)
	var sb strings.Builder
	m.write(&sb)
	out := sb.String()
	for _, want := range []string{`streamguard_requests_total{tenant="t",route="r",code="other"} 5`, `streamguard_requests_total{tenant="t",route="r",code="404"} 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s:\n%s", want, out)
		}
	}
}
