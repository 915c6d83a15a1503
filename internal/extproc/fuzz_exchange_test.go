package extproc_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/proxy"
)

// FuzzEnvoyExchange runs whole exchanges through the ext_proc service as
// Envoy drives them: a client's path, method and body, then an upstream
// status, content type and body cut in two pieces. Each exchange must end
// (no panic in the service, which would end the process, and no hang past
// the exchange's 20 s context).
func FuzzEnvoyExchange(f *testing.F) {
	f.Add("/v1/chat/completions", uint8(0), chatBody("hello", true), uint16(200), uint8(1), uint16(40), sseBody("Hello there, how are you?", 5))
	f.Add("/v1/chat/completions", uint8(0), chatBody("hello", false), uint16(200), uint8(0), uint16(7), wholeBody("Hello there"))
	f.Add("/v1/responses", uint8(0), []byte(`{"model":"m","input":"hello","stream":false}`), uint16(200), uint8(0), uint16(3), []byte(`{"id":"r","object":"response","status":"completed","output":[{"type":"message","id":"m","status":"completed","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[]}]}]}`))
	f.Add("/v1//chat/completions%2f", uint8(1), chatBody("hello", true), uint16(500), uint8(1), uint16(0), []byte(`{"error":{"message":"x"}}`))
	f.Add("/v1/completions", uint8(0), []byte(`{"prompt":"x"}`), uint16(200), uint8(0), uint16(0), []byte(`{}`))
	m := tinyModel(f)
	fx := newFixture(f, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	f.Fuzz(func(t *testing.T, path string, method uint8, body []byte, status uint16, ctype uint8, cut uint16, upBody []byte) {
		if len(path) == 0 || path[0] != '/' {
			return
		}
		for _, c := range path {
			if c < 0x21 || c > 0x7e { // Envoy refuses such a path itself
				return
			}
		}
		fx.t, fx.env.t = t, t
		hdr := map[string]string{"X-Api-Key": "k", "Content-Type": "application/json"}
		if method%3 == 1 {
			hdr[":method"] = "GET"
		} else if method%3 == 2 {
			hdr[":method"] = "PUT"
		}
		st := int(status)
		if st < 100 || st > 599 {
			st = 200
		}
		cts := []string{"application/json", "text/event-stream", "text/event-stream; charset=utf-8", "text/plain", ""}
		c := min(int(cut), len(upBody))
		reply := func(http.Header, []byte) upstreamReply {
			h := map[string]string{"Content-Type": cts[int(ctype)%len(cts)], "X-Status": strconv.Itoa(st)}
			return upstreamReply{status: st, header: h, chunks: [][]byte{upBody[:c], upBody[c:]}}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		o := fx.env.exchange(ctx, request{path: path, header: hdr, body: body}, reply)
		t.Logf("status %d, phase %q, upstream called %v, %d bytes", o.status, o.phase, o.upstreamCalled, len(o.body))
	})
}

var _ = proxy.Tenant{}
