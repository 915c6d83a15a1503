package proxy

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
)

// wordDeltas is n deltas of one common English word each (one Qwen3 token
// per delta for these words).
func wordDeltas(n int) []string {
	words := strings.Fields("the bread is ready when the crust is golden and the loaf sounds hollow so let it cool before you cut it")
	out := make([]string, n)
	for i := range out {
		out[i] = " " + words[i%len(words)]
	}
	out[0] = strings.TrimPrefix(out[0], " ")
	return out
}

// timedStream posts a streamed request and returns, for each event that
// carries content, when it arrived after the request was sent.
func timedStream(t testing.TB, url string) []time.Duration {
	return timedPost(t, url+"/v1/chat/completions", map[string]any{"model": "fake-llm", "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": "How do I know when my bread is done baking?"}}},
		func(ev sseEvent) (text, end bool) {
			p := parseEvent(ev)
			return p.text.Content != nil && *p.text.Content != "", p.done
		})
}

// timedPost posts body to url and returns when each event read counts as
// text arrived after the request was sent, until read says the stream
// ended.
func timedPost(t testing.TB, url string, body any, read func(sseEvent) (text, end bool)) []time.Duration {
	t.Helper()
	start := time.Now()
	resp, err := http.Post(url, "application/json", bytes.NewReader(mustJSON(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rd := newSSEReader(resp.Body)
	var at []time.Duration
	for {
		ev, err := rd.next()
		if err != nil {
			return at
		}
		text, end := read(ev)
		if text {
			at = append(at, time.Since(start))
		}
		if end {
			return at
		}
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestLatency measures the latency the proxy adds per token on a real-size
// model (STREAMGUARD_LONG=1; STREAMGUARD_PROXY_MODEL names the folder,
// default the 0.6B-shaped BF16 one): the same upstream stream is read
// directly and through the proxy in each mode, interleaved, in one run.
func TestLatency(t *testing.T) {
	if os.Getenv("STREAMGUARD_LONG") == "" {
		t.Skip("set STREAMGUARD_LONG=1 to measure")
	}
	dir := os.Getenv("STREAMGUARD_PROXY_MODEL")
	if dir == "" {
		dir = "/work/models/qwen3guard-stream-0.6b-bf16"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skip(err)
	}
	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const n, rounds = 64, 3
	pol := safePolicy(m) // flags nothing: the whole stream is timed
	t.Logf("model %s, %d one-token deltas, %d rounds, load average before: %s", dir, n, rounds, loadAvg())
	for _, pace := range []time.Duration{25 * time.Millisecond, 0} {
		up := newFakeUpstream(t, upstreamSpec{Content: wordDeltas(n), Pace: pace})
		targets := map[string]string{"direct": up.URL}
		for _, mode := range []Mode{PassThrough, HoldBack} {
			targets[mode.String()] = newTestProxy(t, up.URL, Direct(m), Tenant{Policy: pol, Mode: mode}, nil).URL
		}
		timedStream(t, targets["hold-back"]) // warm the page cache
		res := map[string][][]time.Duration{}
		for range rounds {
			for _, name := range []string{"direct", "pass-through", "hold-back"} {
				at := timedStream(t, targets[name])
				if len(at) != n {
					t.Fatalf("%s: %d content events, want %d", name, len(at), n)
				}
				res[name] = append(res[name], at)
			}
		}
		// Medians over rounds of per-round means over tokens. The prompt is
		// judged before the upstream is called, so every token of both
		// modes is shifted by that; the per-token figures leave it out.
		base, pass, hold := res["direct"], res["pass-through"], res["hold-back"]
		var prompt, passTok, holdTok, holdOverPass []time.Duration
		for r := range rounds {
			prompt = append(prompt, pass[r][0]-base[r][0])
			var a, b, c time.Duration
			for i := range n {
				a += (pass[r][i] - pass[r][0]) - (base[r][i] - base[r][0])
				b += hold[r][i] - base[r][i] - (pass[r][0] - base[r][0])
				c += hold[r][i] - pass[r][i]
			}
			passTok = append(passTok, a/n)
			holdTok = append(holdTok, b/n)
			holdOverPass = append(holdOverPass, c/n)
		}
		t.Logf("upstream pace %v/token, direct stream %v: prompt judged before forwarding +%v; added per token (prompt excluded): pass-through %v, hold-back %v (hold-back minus pass-through %v); last token hold-back +%v",
			pace, median(lastOf(base)).Round(time.Millisecond), median(prompt).Round(time.Millisecond),
			median(passTok).Round(100*time.Microsecond), median(holdTok).Round(time.Millisecond), median(holdOverPass).Round(time.Millisecond),
			median(diffLast(hold, base)).Round(time.Millisecond))
	}
	// The guard alone, same run: one token per forward on a stream at the
	// same position.
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(context.Background(), []guard.Message{{Role: "user", Content: "How do I know when my bread is done baking?"}}); err != nil {
		t.Fatal(err)
	}
	var steps []time.Duration
	for _, w := range wordDeltas(16) {
		t0 := time.Now()
		if _, err := s.AppendIDs(context.Background(), guardhook.Tokenizer(m).Encode(w)); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, time.Since(t0))
	}
	t.Logf("guard alone: one-token step %v (median of 16)", median(steps).Round(time.Millisecond))
	t.Logf("load average after: %s", loadAvg())
}

func lastOf(runs [][]time.Duration) []time.Duration {
	var out []time.Duration
	for _, r := range runs {
		out = append(out, r[len(r)-1])
	}
	return out
}

func diffLast(a, b [][]time.Duration) []time.Duration {
	var out []time.Duration
	for r := range a {
		out = append(out, a[r][len(a[r])-1]-b[r][len(b[r])-1])
	}
	return out
}
