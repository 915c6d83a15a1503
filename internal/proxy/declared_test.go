package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// semanticModerator stands in for a guard with a stream of limit bytes
// that flags a text only when it holds both halves of an instruction
// (PART-A and PART-B), as a real guard flags "how to make" + "sarin" only
// together. Anything else goes to the real tiny model (safe policy).
type semanticModerator struct {
	Moderator
	limit    int
	mu       sync.Mutex
	forwards int // JudgePrompt calls that ran the model (not length-refused)
	bytes    int // bytes of those
}

type semanticStream struct {
	Stream
	m *semanticModerator
}

func (m *semanticModerator) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := m.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return semanticStream{s, m}, nil
}

func (s semanticStream) JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error) {
	n := 0
	var all strings.Builder
	for _, m := range msgs {
		n += len(m.Content)
		all.WriteString(m.Content)
	}
	if n > s.m.limit {
		return nil, fmt.Errorf("%w: %d bytes", ErrContextLength, n)
	}
	s.m.mu.Lock()
	s.m.forwards++
	s.m.bytes += n
	s.m.mu.Unlock()
	if strings.Contains(all.String(), "PART-A") && strings.Contains(all.String(), "PART-B") {
		return &guard.PromptVerdict{Verdict: guard.Verdict{Risk: "Unsafe", Level: "Unsafe", Category: "Violent"}, Flagged: true}, nil
	}
	return s.Stream.JudgePrompt(ctx, msgs)
}

func tool(name, desc string) string {
	return fmt.Sprintf(`{"type":"function","function":{"name":%q,"description":%q}}`, name, desc)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestDeclaredNotSplit: an instruction split over two tool definitions is
// judged together when the list fits the stream (refused), and a list
// padded past the stream, the two halves either side of len/2, is refused
// too, never judged in parts — unless the tenant trims long input, which
// accepts that.
func TestDeclaredNotSplit(t *testing.T) {
	m := tinyModel(t)
	mod := &semanticModerator{Moderator: Direct(m), limit: 2000}
	up := newFakeUpstream(t, upstreamSpec{Content: []string{"ok"}})
	p := newTestProxy(t, up.URL, mod, Tenant{Name: "a", Policy: safePolicy(m)}, nil)
	a, b := tool("a", "Always follow PART-A"), tool("b", "together with PART-B")
	code, body := post(t, p.URL, `{"model":"m","tools":[`+a+","+b+`],"messages":[{"role":"user","content":"hi"}]}`)
	p.wait(t, 1)
	if code != 400 {
		t.Fatalf("control (fits): status %d %s; want 400", code, body)
	}
	var tools []string
	for i := range 40 {
		tools = append(tools, tool(fmt.Sprintf("pad%d", i), strings.Repeat("Looks a record up. ", 5)))
	}
	tools[19], tools[20] = a, b // either side of len/2
	code, body = post(t, p.URL, `{"model":"m","tools":[`+strings.Join(tools, ",")+`],"messages":[{"role":"user","content":"hi"}]}`)
	p.wait(t, 1)
	if code != 400 || !strings.Contains(body, "context_length_exceeded") {
		t.Errorf("padded past the stream: status %d %s; want 400 context_length_exceeded", code, body)
	}
	trim := newTestProxy(t, up.URL, mod, Tenant{Name: "a", Policy: safePolicy(m), TrimLongPrompt: true}, nil)
	code, body = post(t, trim.URL, `{"model":"m","tools":[`+strings.Join(tools, ",")+`],"messages":[{"role":"user","content":"hi"}]}`)
	trim.wait(t, 1)
	if code != 200 {
		t.Errorf("trimming tenant: status %d %s; want the list judged in parts", code, body)
	}
}

// TestDeclaredAmplification: declared items longer than the stream cost
// the guard no stream-full of work (refused before a forward), and for a
// tenant that trims long input at most 2^maxDeclaredSplit of them, however
// large the body.
func TestDeclaredAmplification(t *testing.T) {
	m := tinyModel(t)
	mod := &semanticModerator{Moderator: Direct(m), limit: 2000}
	up := newFakeUpstream(t, upstreamSpec{Content: []string{"ok"}})
	p := newTestProxy(t, up.URL, mod, Tenant{Name: "a", Policy: safePolicy(m)}, nil)
	var tools []string
	for i := range 64 {
		tools = append(tools, tool(fmt.Sprintf("t%d", i), strings.Repeat("x", 1900)))
	}
	body := `{"model":"m","tools":[` + strings.Join(tools, ",") + `],"messages":[{"role":"user","content":"hi"}]}`
	code, _ := post(t, p.URL, body)
	p.wait(t, 1)
	if code != 400 || mod.bytes != 0 {
		t.Errorf("status %d; the guard judged %d bytes in %d forwards, want none", code, mod.bytes, mod.forwards)
	}
	trim := newTestProxy(t, up.URL, mod, Tenant{Name: "a", Policy: safePolicy(m), TrimLongPrompt: true}, nil)
	code, _ = post(t, trim.URL, body)
	trim.wait(t, 1)
	if code != 400 || mod.bytes > (1<<maxDeclaredSplit)*mod.limit {
		t.Errorf("trimming tenant: status %d; the guard judged %d bytes (%.0f stream-fulls) in %d forwards", code, mod.bytes, float64(mod.bytes)/float64(mod.limit), mod.forwards)
	}
}
