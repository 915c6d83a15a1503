package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

func sseData(v string) []byte { return []byte("data: " + v + "\n\n") }

// apiErrorOf decodes an OpenAI error body.
func apiErrorOf(t *testing.T, body []byte) apiError {
	t.Helper()
	var e struct{ Error apiError }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an OpenAI error: %s", body)
	}
	return e.Error
}

// ---- item: credentials ----

// TestCredentials: streamguard's tenant key (Authorization, X-Api-Key)
// and the client's cookies never reach the upstream; the upstream key is
// the client's X-Upstream-Authorization (bearer scheme in any case), else
// the tenant's; the upstream's Set-Cookie does not reach the client. The
// fail-open path (no guard) forwards the same headers.
func TestCredentials(t *testing.T) {
	m := tinyModel(t)
	tenantKey := map[string]string{"Authorization": "Bearer sg-tenant-secret", "X-Api-Key": "sg-tenant-secret", "Cookie": "session=s3cret"}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"X-Custom": "kept"}
		for k, v := range tenantKey {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	for _, c := range []struct {
		name      string
		upKey     string
		hdr       map[string]string
		cookies   bool
		wantAuth  string
		wantCooky string
	}{
		{name: "no upstream key", hdr: with(nil), wantAuth: ""},
		{name: "tenant key", upKey: "sk-tenant", hdr: with(nil), wantAuth: "Bearer sk-tenant"},
		{name: "client key, lower-case scheme", upKey: "sk-tenant", hdr: with(map[string]string{UpstreamAuthHeader: "bearer sk-client"}), wantAuth: "Bearer sk-client"},
		{name: "client key, upper-case scheme", hdr: with(map[string]string{UpstreamAuthHeader: "BEARER  sk-client"}), wantAuth: "Bearer sk-client"},
		{name: "client key, bare", hdr: with(map[string]string{UpstreamAuthHeader: "sk-bare"}), wantAuth: "Bearer sk-bare"},
		{name: "cookies configured", hdr: with(nil), cookies: true, wantCooky: "session=s3cret"},
	} {
		for _, path := range []string{"judged stream", "judged whole", "fail-open"} {
			t.Run(c.name+"/"+path, func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi."}, Header: map[string]string{"Set-Cookie": "up=1"}})
				var mod Moderator = Direct(m)
				if path == "fail-open" {
					mod = overloaded{}
				}
				p := newTestProxy(t, up.URL, mod, Tenant{Policy: safePolicy(m), UpstreamKey: c.upKey, FailOpen: true},
					func(cfg *Config) { cfg.ForwardCookies = c.cookies })
				resp, body := rawPost(t, p.URL, "Hello", path != "judged whole", c.hdr)
				p.wait(t, 1)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				up.mu.Lock()
				seen := up.headers[0]
				up.mu.Unlock()
				if got := seen.Get("Authorization"); got != c.wantAuth {
					t.Errorf("upstream saw Authorization %q, want %q", got, c.wantAuth)
				}
				if got := seen.Get("Cookie"); got != c.wantCooky {
					t.Errorf("upstream saw Cookie %q, want %q", got, c.wantCooky)
				}
				for k, vs := range seen {
					for _, v := range vs {
						if strings.Contains(v, "sg-tenant-secret") {
							t.Errorf("the tenant key reached the upstream in %s: %q", k, v)
						}
					}
				}
				for _, k := range []string{"X-Api-Key", UpstreamAuthHeader} {
					if v := seen.Values(k); len(v) > 0 {
						t.Errorf("upstream saw %s %q", k, v)
					}
				}
				if seen.Get("X-Custom") != "kept" {
					t.Errorf("end-to-end header X-Custom not forwarded: %v", seen)
				}
				wantSet := ""
				if c.cookies {
					wantSet = "up=1"
				}
				if got := resp.Header.Get("Set-Cookie"); got != wantSet {
					t.Errorf("client got Set-Cookie %q, want %q", got, wantSet)
				}
			})
		}
	}
}

func TestUpstreamAuthorization(t *testing.T) {
	for _, c := range []struct{ client, tenant, want string }{
		{"", "", ""},
		{"", "k", "Bearer k"},
		{"Bearer c", "k", "Bearer c"},
		{"bEaReR c", "", "Bearer c"},
		{"  c  ", "", "Bearer c"},
		{"Basic dXNlcjpwdw==", "k", "Basic dXNlcjpwdw=="},
	} {
		if got := upstreamAuthorization(c.client, c.tenant); got != c.want {
			t.Errorf("upstreamAuthorization(%q, %q) = %q, want %q", c.client, c.tenant, got, c.want)
		}
	}
}

// ---- item: over-long input ----

// longWords is text of about n tokens.
func longWords(n int) string { return strings.Repeat(" word", n) }

// TestPromptTooLong: a conversation longer than the guard's context is a
// 400 context_length_exceeded, fail-open or not, streamed or not, and the
// upstream is never called; no shorter retry judges only part of it unless
// the tenant asked for TrimLongPrompt.
func TestPromptTooLong(t *testing.T) {
	m := tinyModel(t)
	long := longWords(m.Info().MaxPositions + 100)
	oneTurn := []any{map[string]any{"role": "user", "content": long}}
	// The long text is an earlier turn: the system turn and the last user
	// turn alone would fit.
	earlier := []any{
		map[string]any{"role": "system", "content": "Be helpful."},
		map[string]any{"role": "user", "content": "Hi"},
		map[string]any{"role": "assistant", "content": long},
		map[string]any{"role": "user", "content": "Go on."},
	}
	post := func(t *testing.T, url string, msgs []any, stream bool) (*http.Response, []byte) {
		body := mustJSON(map[string]any{"model": "fake-llm", "stream": stream, "messages": msgs})
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, conv := range []struct {
		name string
		msgs []any
	}{{"one turn", oneTurn}, {"earlier turn", earlier}} {
		for _, open := range []bool{false, true} {
			for _, stream := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/failopen=%v/stream=%v", conv.name, open, stream), func(t *testing.T) {
					up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi."}})
					p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), FailOpen: open}, nil)
					resp, body := post(t, p.URL, conv.msgs, stream)
					rec := p.lastRecord(t)
					e := apiErrorOf(t, body)
					if resp.StatusCode != 400 || e.Code != "context_length_exceeded" || e.Type != "invalid_request_error" || e.Param == nil || *e.Param != "messages" {
						t.Fatalf("status %d, error %+v", resp.StatusCode, e)
					}
					if resp.Header.Get("X-Streamguard-Unjudged") != "" || rec["event"] != EventContextLength {
						t.Errorf("headers %v, audit %v", resp.Header, rec)
					}
					if up.calls != 0 {
						t.Errorf("the upstream was called")
					}
				})
			}
		}
	}
	t.Run("TrimLongPrompt judges the last turn", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi."}})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), TrimLongPrompt: true}, nil)
		resp, body := post(t, p.URL, earlier, false)
		if rec := p.lastRecord(t); resp.StatusCode != 200 || rec["event"] != EventAllowed {
			t.Fatalf("status %d %s, audit %v", resp.StatusCode, body, rec)
		}
		// A last turn that does not fit alone is refused all the same.
		resp, body = post(t, p.URL, oneTurn, false)
		if rec := p.lastRecord(t); resp.StatusCode != 400 || apiErrorOf(t, body).Code != "context_length_exceeded" || rec["event"] != EventContextLength {
			t.Fatalf("status %d %s, audit %v", resp.StatusCode, body, rec)
		}
	})
}

// promptFails is a moderator whose JudgePrompt fails with err.
type promptFails struct {
	Moderator
	err error
}

type promptFailsStream struct {
	Stream
	err error
}

func (p promptFails) Open(ctx context.Context, pol guard.Policy) (Stream, error) {
	s, err := p.Moderator.Open(ctx, pol)
	return promptFailsStream{s, p.err}, err
}

func (p promptFailsStream) JudgePrompt(context.Context, []guard.Message) (*guard.PromptVerdict, error) {
	return nil, p.err
}

// TestContextLengthSentinels: a Stream (a server's adapter) may mark the
// error with guard.ErrContextLength or proxy.ErrContextLength; any other
// error is a guard failure that fail-open forwards.
func TestContextLengthSentinels(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		err    error
		status int
		event  string
	}{
		{fmt.Errorf("server: stream too long: %w", ErrContextLength), 400, EventContextLength},
		{fmt.Errorf("scheduler: %w", guard.ErrContextLength), 400, EventContextLength},
		{errors.New("scheduler: broken"), 200, EventUnjudged},
	} {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi."}})
		p := newTestProxy(t, up.URL, promptFails{Direct(m), c.err}, Tenant{Policy: safePolicy(m), FailOpen: true}, nil)
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if rec := p.lastRecord(t); resp.StatusCode != c.status || rec["event"] != c.event {
			t.Errorf("%v: status %d %s, audit %v", c.err, resp.StatusCode, body, rec)
		}
	}
}

// TestResponseTooLong: a response that outgrows the guard's stream is cut
// with finish_reason "length", fail-open or not; hold-back sends nothing
// the guard did not judge, and nothing is marked unjudged.
func TestResponseTooLong(t *testing.T) {
	m := tinyModel(t)
	tooLong := fmt.Errorf("guard: %w: the stream would reach 8193 tokens", guard.ErrContextLength)
	for _, open := range []bool{false, true} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(fmt.Sprintf("stream/failopen=%v/%s", open, mode), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 10), Pace: 2 * time.Millisecond, HangAfter: 1})
				judged := &strings.Builder{}
				p := newTestProxy(t, up.URL, failing{Moderator: Direct(m), n: 3, err: tooLong, judged: judged},
					Tenant{Policy: safePolicy(m), Mode: mode, FailOpen: open}, nil)
				got, err := streamChat(context.Background(), p.URL, "Hello")
				rec := p.lastRecord(t)
				if err != nil || got.Finish != openai.FinishReasonLength {
					t.Fatalf("got %+v, %v", got, err)
				}
				if rec["event"] != EventContextLength {
					t.Errorf("audit %v", rec)
				}
				if got.Content == testResponse || !strings.HasPrefix(testResponse, got.Content) {
					t.Errorf("content %q", got.Content)
				}
				if mode == HoldBack && !strings.HasPrefix(judged.String(), got.Content) {
					t.Errorf("hold-back released text the guard did not judge: %q, judged %q", got.Content, judged.String())
				}
				up.waitCanceled(t)
			})
		}
		t.Run(fmt.Sprintf("whole/failopen=%v", open), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Content: []string{testResponse}})
			p := newTestProxy(t, up.URL, failing{Moderator: Direct(m), err: tooLong}, Tenant{Policy: safePolicy(m), FailOpen: open}, nil)
			resp, err := openaiClient(p.URL).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
				Model: "fake-llm", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "Hello"}}})
			rec := p.lastRecord(t)
			if err != nil {
				t.Fatal(err)
			}
			if c := resp.Choices[0]; c.Message.Content != "" || c.FinishReason != openai.FinishReasonLength || rec["event"] != EventContextLength {
				t.Errorf("got %q (%s), audit %v", c.Message.Content, c.FinishReason, rec)
			}
		})
	}
}

// ---- item: strict upstream events ----

// recorder is a moderator that records the text its streams judged.
type recorder struct {
	Moderator
	mu     sync.Mutex
	judged strings.Builder
}

type recorderStream struct {
	Stream
	r *recorder
}

func (r *recorder) Open(ctx context.Context, pol guard.Policy) (Stream, error) {
	s, err := r.Moderator.Open(ctx, pol)
	return recorderStream{s, r}, err
}

func (s recorderStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	tvs, err := s.Stream.AppendText(ctx, text)
	if err == nil {
		s.r.mu.Lock()
		s.r.judged.WriteString(text)
		s.r.mu.Unlock()
	}
	return tvs, err
}

func (s recorderStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.tag(s.Stream.StartToolCall(ctx))(tokenizer.ToolCallTag)
}

func (s recorderStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.tag(s.Stream.EndToolCall(ctx))(tokenizer.ToolCallEndTag)
}

// tag records a tool call's tag, spelled, once its call succeeded.
func (s recorderStream) tag(tvs []guard.TokenVerdict, err error) func(string) ([]guard.TokenVerdict, error) {
	return func(text string) ([]guard.TokenVerdict, error) {
		if err == nil {
			s.r.mu.Lock()
			s.r.judged.WriteString(text)
			s.r.mu.Unlock()
		}
		return tvs, err
	}
}

func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.judged.String()
}

func chunkEvent(choices string) []byte {
	return sseData(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":` + choices + `}`)
}

// TestStrictUpstreamEvents: events Go's decoder would read otherwise than
// the client (keys by case, repeated keys), several choices, text after the
// finish, and data that is no chunk end the stream with an
// upstream_bad_response error; their text never reaches the client.
func TestStrictUpstreamEvents(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		name string
		ev   []byte
		end  bool // the bad event comes after the finish chunk
	}{
		{"key case", chunkEvent(`[{"index":0,"delta":{"content":"fine","Content":"EVIL"}}]`), false},
		{"key case only", chunkEvent(`[{"index":0,"delta":{"Content":"EVIL"}}]`), false},
		{"choices case", sseData(`{"id":"x","Choices":[{"index":0,"delta":{"content":"EVIL"}}]}`), false},
		{"repeated key", chunkEvent(`[{"index":0,"delta":{"content":"EVIL","content":"fine"}}]`), false},
		{"repeated choices", sseData(`{"choices":[{"index":0,"delta":{"content":"fine"}}],"choices":[{"index":0,"delta":{"content":"EVIL"}}]}`), false},
		{"two choices", chunkEvent(`[{"index":0,"delta":{"content":"fine"}},{"index":1,"delta":{"content":"EVIL"}}]`), false},
		{"second choice", chunkEvent(`[{"index":1,"delta":{"content":"EVIL"}}]`), false},
		{"reasoning fields differ", chunkEvent(`[{"index":0,"delta":{"reasoning_content":"fine","reasoning":"EVIL"}}]`), false},
		{"not JSON", sseData(`{"choices":[{"index":0,"delta":{"content":"EVIL"}}]} trailing`), false},
		{"not an object", sseData(`"EVIL"`), false},
		{"lone CR", []byte("data: {\"choices\":[]}\rdata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"EVIL\"}}]}\n\n"), false},
		// Clients end a line at a lone CR: after a comment, the data is theirs.
		{"lone CR after a comment", []byte(": x\rdata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"EVIL\"}}]}\n\n"), false},
		// Clients trim lines, or read the first JSON value of a body.
		{"leading space", []byte(" data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"EVIL\"}}]}\n\n"), false},
		{"a completion in the stream", []byte("{\"choices\":[{\"index\":0,\"message\":{\"content\":\"EVIL\"}}]}\n\n"), false},
		// An error beside text: some client shows the text.
		{"error beside text", sseData(`{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"EVIL"}}]}`), false},
		{"error string beside text", sseData(`{"error":"x","choices":[{"index":0,"delta":{"content":"EVIL"}}]}`), false},
		// Model text in a field the proxy does not judge: an audio
		// answer's transcript, the legacy "text", logprobs' tokens and
		// alternatives, OpenRouter's reasoning_details, a message in a
		// stream.
		{"audio transcript", chunkEvent(`[{"index":0,"delta":{"audio":{"id":"a","transcript":"EVIL"}}}]`), false},
		{"audio data", chunkEvent(`[{"index":0,"delta":{"audio":{"id":"a","data":"RVZJTA=="}}}]`), false},
		{"legacy text", chunkEvent(`[{"index":0,"delta":{},"text":"EVIL"}]`), false},
		{"legacy text beside other content", chunkEvent(`[{"index":0,"delta":{"content":"fine"},"text":"EVIL"}]`), false},
		{"logprobs", chunkEvent(`[{"index":0,"delta":{"content":"fine"},"logprobs":{"content":[{"token":"fine","logprob":0,"bytes":[102],"top_logprobs":[{"token":"EVIL","logprob":-1,"bytes":[69]}]}]}}]`), false},
		{"logprobs not an object", chunkEvent(`[{"index":0,"delta":{},"logprobs":"EVIL"}]`), false},
		{"reasoning_details", chunkEvent(`[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.text","text":"EVIL"}]}}]`), false},
		{"reasoning_details beside other reasoning", chunkEvent(`[{"index":0,"delta":{"reasoning":"fine","reasoning_details":[{"type":"reasoning.summary","summary":"EVIL"}]}}]`), false},
		{"encrypted reasoning_details with text", chunkEvent(`[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.encrypted","data":"x","text":"EVIL"}]}}]`), false},
		{"reasoning_details with an unknown text field", chunkEvent(`[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.encrypted","data":"x","note":"EVIL"}]}}]`), false},
		{"content_filter_offsets with text", chunkEvent(`[{"index":0,"content_filter_offsets":{"check_offset":1,"note":"EVIL"}}]`), false},
		{"message in a stream", chunkEvent(`[{"index":0,"message":{"content":"EVIL"}}]`), false},
		{"role not a string", chunkEvent(`[{"index":0,"delta":{"role":{"name":"EVIL"}}}]`), false},
		// A tool call's fields the proxy does not judge hold no text.
		{"tool call with an unknown text field", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","note":"EVIL","function":{"name":"f","arguments":""}}]}}]`), false},
		{"function with an unknown text field", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"","description":"EVIL"}}]}}]`), false},
		{"tool call index not a number", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":"EVIL","function":{"name":"f"}}]}}]`), false},
		{"tool call name not a string", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":{"EVIL":1}}}]}}]`), false},
		{"tool call both function and custom", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f"},"custom":{"name":"g","input":"EVIL"}}]}}]`), false},
		{"tool call after finish", chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"EVIL"}}]}}]`), true},
		{"function_call after finish", chunkEvent(`[{"index":0,"delta":{"function_call":{"arguments":"EVIL"}}}]`), true},
		{"text after finish", chunkEvent(`[{"index":0,"delta":{"content":"EVIL"}}]`), true},
		{"refusal after finish", chunkEvent(`[{"index":0,"delta":{"refusal":"EVIL"}}]`), true},
	} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(c.name+"/"+mode.String(), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Events: streamWith(c.ev, c.end)})
				rec := &recorder{Moderator: Direct(m)}
				p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: mode, FailOpen: true}, nil)
				resp, body := rawPost(t, p.URL, "Hello", true, nil)
				audit := p.lastRecord(t)
				if resp.StatusCode != 200 || !strings.Contains(string(body), `"code":"upstream_bad_response"`) || strings.Contains(string(body), "data: [DONE]") {
					t.Fatalf("status %d body %s", resp.StatusCode, body)
				}
				if strings.Contains(string(body), "EVIL") {
					t.Errorf("unjudged text reached the client: %s", body)
				}
				if audit["event"] != EventUpstreamError {
					t.Errorf("audit %v", audit)
				}
			})
		}
	}
}

// streamWith is a short stream holding ev: a first chunk, ev, the finish
// chunk and [DONE]; with afterFinish, ev comes after the finish chunk.
func streamWith(ev []byte, afterFinish bool) [][]byte {
	first := chunkEvent(`[{"index":0,"delta":{"role":"assistant","content":"Hello there, "}}]`)
	finish := chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`)
	if afterFinish {
		return [][]byte{first, finish, ev, sseData("[DONE]")}
	}
	return [][]byte{first, ev, finish, sseData("[DONE]")}
}

// TestUpstreamErrorEvents: what clients take for an error is passed on as
// the upstream's error (openai-python raises on a truthy "error": TGI's
// string, OpenRouter's object beside a choice finishing with "error";
// llama.cpp's "error:" field line is ignored by clients, and by the
// proxy), and a chunk whose "error" is falsy is read, and judged, like
// any other, as clients show its choices.
func TestUpstreamErrorEvents(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		name   string
		ev     []byte
		passed bool // the upstream's error passed on (else read as a chunk)
	}{
		{"TGI", sseData(`{"error":"Request failed during generation: out of memory","error_type":"generation"}`), true},
		{"OpenRouter", sseData(`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","error":{"code":502,"message":"provider error"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`), true},
		{"error object", sseData(`{"error":{"message":"overloaded","type":"server_error"}}`), true},
		{"error false", sseData(`{"error":false,"choices":[{"index":0,"delta":{"content":"FALSY"}}]}`), false},
		{"error empty", sseData(`{"error":"","choices":[{"index":0,"delta":{"content":"FALSY"}}]}`), false},
		{"error {}", sseData(`{"error":{},"choices":[{"index":0,"delta":{"content":"FALSY"}}]}`), false},
		{"error 0", sseData(`{"error":0,"choices":[{"index":0,"delta":{"content":"FALSY"}}]}`), false},
		{"llama.cpp error field", []byte("error: {\"code\":500,\"message\":\"x\"}\n\n"), false},
	} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(c.name+"/"+mode.String(), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Events: streamWith(c.ev, false)})
				rec := &recorder{Moderator: Direct(m)}
				p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
				_, body := rawPost(t, p.URL, "Hello", true, nil)
				audit := p.lastRecord(t)
				if c.passed {
					if !bytes.Contains(body, bytes.TrimSuffix(bytes.TrimPrefix(c.ev, []byte("data: ")), []byte("\n\n"))) || audit["event"] != EventUpstreamError {
						t.Fatalf("the upstream's error was not passed on: audit %v, body %s", audit, body)
					}
					return
				}
				if strings.Contains(string(body), "upstream_bad_response") || !strings.Contains(string(body), "data: [DONE]") || audit["event"] != EventAllowed {
					t.Fatalf("refused: audit %v, body %s", audit, body)
				}
				if bytes.Contains(c.ev, []byte("FALSY")) && !strings.Contains(rec.text(), "FALSY") {
					t.Errorf("the chunk's text was not judged: %q", rec.text())
				}
			})
		}
	}
}

// TestStrictWholeResponse: the same rules for a non-streamed response: 502
// upstream_bad_response, nothing of it returned.
func TestStrictWholeResponse(t *testing.T) {
	m := tinyModel(t)
	for name, body := range map[string]string{
		"key case":        `{"choices":[{"index":0,"message":{"role":"assistant","content":"fine","Content":"EVIL"}}]}`,
		"repeated key":    `{"choices":[{"index":0,"message":{"content":"EVIL","content":"fine"}}]}`,
		"two choices":     `{"choices":[{"index":0,"message":{"content":"fine"}},{"index":1,"message":{"content":"EVIL"}}]}`,
		"second choice":   `{"choices":[{"index":1,"message":{"content":"EVIL"}}]}`,
		"reasoning":       `{"choices":[{"index":0,"message":{"content":"fine","reasoning_content":"a","reasoning":"EVIL"}}]}`,
		"trailing data":   `{"choices":[{"index":0,"message":{"content":"fine"}}]}{"EVIL":1}`,
		"choices by case": `{"Choices":[{"index":0,"message":{"content":"EVIL"}}]}`,
		// Model text in a field the proxy does not judge.
		"audio transcript": `{"choices":[{"index":0,"message":{"role":"assistant","content":null,"audio":{"id":"a","data":"","expires_at":1,"transcript":"EVIL"}}}]}`,
		"legacy text":      `{"choices":[{"index":0,"text":"EVIL","finish_reason":"stop"}]}`,
		"logprobs":         `{"choices":[{"index":0,"message":{"content":"fine"},"logprobs":{"content":[{"token":"fine","logprob":0,"bytes":null,"top_logprobs":[{"token":"EVIL","logprob":-1}]}]}}]}`,
		"delta in a whole": `{"choices":[{"index":0,"delta":{"content":"EVIL"}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Whole: []byte(body)})
			p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), FailOpen: true}, nil)
			resp, got := rawPost(t, p.URL, "Hello", false, nil)
			p.wait(t, 1)
			if e := apiErrorOf(t, got); resp.StatusCode != 502 || e.Code != "upstream_bad_response" || strings.Contains(string(got), "EVIL") {
				t.Fatalf("status %d body %s", resp.StatusCode, got)
			}
		})
	}
}

// TestRefusalIsJudged: the refusal field is text the client shows; it is
// judged in order with the content, streamed or whole, and a flag in it
// cuts it like content.
func TestRefusalIsJudged(t *testing.T) {
	m := tinyModel(t)
	refusal := "I cannot help with that request, sorry."
	evs := [][]byte{
		chunkEvent(`[{"index":0,"delta":{"role":"assistant","content":null,"refusal":""}}]`),
		chunkEvent(`[{"index":0,"delta":{"refusal":"I cannot help "}}]`),
		chunkEvent(`[{"index":0,"delta":{"refusal":"with that request, sorry."}}]`),
		chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`),
		sseData("[DONE]"),
	}
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run("stream/"+mode.String(), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Events: evs})
			rec := &recorder{Moderator: Direct(m)}
			p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			resp, body := rawPost(t, p.URL, "Hello", true, nil)
			p.wait(t, 1)
			if resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			if rec.text() != refusal {
				t.Errorf("judged %q, want %q", rec.text(), refusal)
			}
		})
	}
	t.Run("whole", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Whole: []byte(`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"` + refusal + `"},"finish_reason":"stop"}]}`)})
		rec := &recorder{Moderator: Direct(m)}
		p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		p.wait(t, 1)
		if resp.StatusCode != 200 || rec.text() != refusal {
			t.Fatalf("status %d body %s, judged %q", resp.StatusCode, body, rec.text())
		}
	})
	t.Run("flagged refusal is cut", func(t *testing.T) {
		fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
		var evs [][]byte
		for _, d := range splitRunes(testResponse, 12) {
			evs = append(evs, chunkEvent(`[{"index":0,"delta":{"refusal":`+string(mustJSON(d))+`}}]`))
		}
		evs = append(evs, chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`), sseData("[DONE]"))
		up := newFakeUpstream(t, upstreamSpec{Events: evs})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy, Mode: HoldBack}, nil)
		_, body := rawPost(t, p.URL, fc.Prompt, true, nil)
		if rec := p.lastRecord(t); rec["event"] != EventResponseFlagged || rec["token"] != float64(fc.Index) {
			t.Fatalf("audit %v", rec)
		}
		var shown strings.Builder
		for _, line := range strings.Split(string(body), "\n") {
			var c struct {
				Choices []struct {
					Delta struct{ Refusal string } `json:"delta"`
				} `json:"choices"`
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && json.Unmarshal([]byte(d), &c) == nil && len(c.Choices) > 0 {
				shown.WriteString(c.Choices[0].Delta.Refusal)
			}
		}
		if want := textBefore(fc.Tokens, fc.RunStart); shown.String() != want {
			t.Errorf("refusal shown %q, want %q", shown.String(), want)
		}
	})
}

// ---- item: timeouts, Retry-After ----

func TestUpstreamTimeouts(t *testing.T) {
	m := tinyModel(t)
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("response headers/stream=%v", stream), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi"}, HeaderDelay: 30 * time.Second})
			p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, func(c *Config) { c.HeaderTimeout = 200 * time.Millisecond })
			resp, body := rawPost(t, p.URL, "Hello", stream, nil)
			if e := apiErrorOf(t, body); resp.StatusCode != 504 || e.Code != "upstream_timeout" || e.Type != typeUpstream {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			if rec := p.lastRecord(t); rec["event"] != EventUpstreamError {
				t.Errorf("audit %v", rec)
			}
			up.waitCanceled(t)
		})
	}
	t.Run("whole body idle", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi there"}, HangAfter: 20})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if e := apiErrorOf(t, body); resp.StatusCode != 504 || e.Code != "upstream_timeout" {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
		p.wait(t, 1)
		up.waitCanceled(t)
	})
	t.Run("fail-open body idle", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi"}, Hang: true})
		p := newTestProxy(t, up.URL, overloaded{}, Tenant{FailOpen: true}, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"code":"upstream_timeout"`) {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
		if rec := p.lastRecord(t); rec["event"] != EventUpstreamError {
			t.Errorf("audit %v", rec)
		}
		up.waitCanceled(t)
	})
}

// TestRetryAfterRelayed: the upstream's Retry-After (and rate-limit
// headers) reach the client with its error.
func TestRetryAfterRelayed(t *testing.T) {
	m := tinyModel(t)
	for _, body := range []string{`{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`, "busy"} {
		up := newFakeUpstream(t, upstreamSpec{Status: 429, ErrBody: body,
			Header: map[string]string{"Retry-After": "7", "X-Ratelimit-Remaining-Requests": "0", "Set-Cookie": "a=b"}})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
		resp, got := rawPost(t, p.URL, "Hello", true, nil)
		p.wait(t, 1)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Errorf("status %d headers %v body %s", resp.StatusCode, resp.Header, got)
		}
		if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", resp.Header)
		}
	}
}

// ---- item: the record of a finished answer ----

// TestRecordAfterDone: the client has the whole answer ([DONE]) and closes
// the connection while the upstream has not closed its stream yet; the
// record says how the answer was judged, not client_closed.
func TestRecordAfterDone(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		name  string
		mod   Moderator
		open  bool
		event string
	}{
		{"judged", Direct(m), false, EventAllowed},
		{"fail-open", failing{Moderator: Direct(m)}, true, EventUnjudged},
	} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(c.name+"/"+mode.String(), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 20), HangAfter: 1})
				p := newTestProxy(t, up.URL, c.mod, Tenant{Policy: safePolicy(m), Mode: mode, FailOpen: c.open}, nil)
				got, err := streamChat(context.Background(), p.URL, "Hello")
				if err != nil || got.Content != testResponse {
					t.Fatalf("%q %v", got.Content, err)
				}
				if rec := p.lastRecord(t); rec["event"] != c.event {
					t.Errorf("audit %v", rec)
				}
				up.waitCanceled(t)
			})
		}
	}
}

// ---- item: fields without judged text ----

// markModerator wraps a moderator: every response token from the one whose
// text completes "EVIL" on is non-safe, so the response is flagged at the
// second one (as with the default debounce of 2) wherever the tokenizer
// splits the word. The prompt is judged by the wrapped moderator.
type markModerator struct{ Moderator }

type markStream struct {
	Stream
	acc     strings.Builder
	run     int
	flagged bool
}

func (m markModerator) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := m.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return &markStream{Stream: s}, nil
}

func (s *markStream) mark(tvs []guard.TokenVerdict, err error) ([]guard.TokenVerdict, error) {
	for i := range tvs {
		s.acc.WriteString(tvs[i].Text)
		ns := strings.Contains(s.acc.String(), "EVIL")
		tvs[i].NonSafe, tvs[i].Flagged = ns, false
		if !ns {
			s.run = 0
			continue
		}
		s.run++
		if s.run >= 2 && !s.flagged {
			s.flagged = true
			tvs[i].Flagged = true
			tvs[i].Risk, tvs[i].Category = "Unsafe", "Violent"
		}
	}
	return tvs, err
}

func (s *markStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	return s.mark(s.Stream.AppendText(ctx, text))
}

func (s *markStream) EndThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.mark(s.Stream.EndThinking(ctx))
}

func (s *markStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.mark(s.Stream.StartToolCall(ctx))
}

func (s *markStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.mark(s.Stream.EndToolCall(ctx))
}

func (s *markStream) FlushText(ctx context.Context) ([]guard.TokenVerdict, error) {
	return s.mark(s.Stream.FlushText(ctx))
}

// TestTextlessFieldsRelayed: the fields real upstreams send beside the
// judged text that carry none of the answer's text (OpenAI's null refusal
// and empty annotations, vLLM's stop_reason, Together's legacy "text"
// repeating the content and its token_id, Azure's content_filter_results,
// SGLang's matched_stop, OpenRouter's native_finish_reason, tool calls)
// pass: the answer is relayed byte for byte, and its text is judged once.
// TestVendorChunksAccepted: chunks of common upstreams that carry no text
// but the judged one pass the strict reading: Azure OpenAI's asynchronous
// filter annotations (offsets beside the filter's results, no delta), and
// OpenRouter's reasoning_details for reasoning models — encrypted blobs,
// or the reasoning's summary beside that very reasoning.
func TestVendorChunksAccepted(t *testing.T) {
	for _, c := range []struct{ name, data string }{
		{"azure async filter annotation", `{"choices":[{"content_filter_offsets":{"check_offset":44,"start_offset":44,"end_offset":198},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}`},
		{"openrouter encrypted reasoning", `{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-5","object":"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":null,"reasoning_details":[{"type":"reasoning.encrypted","data":"gAAAAABo95AdNmqx","id":"rs_1","format":"openai-responses-v1","index":0}]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}`},
		{"openrouter reasoning summary", `{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-5","object":"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"**Respond","reasoning_details":[{"type":"reasoning.summary","summary":"**Respond","format":"openai-responses-v1","index":0}]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}`},
	} {
		data := []byte(c.data)
		p := parseEvent(sseEvent{raw: append(append([]byte("data: "), data...), "\n\n"...), data: data})
		if p.bad != nil {
			t.Errorf("%s: refused: %v", c.name, p.bad)
		}
	}
}

func TestTextlessFieldsRelayed(t *testing.T) {
	m := tinyModel(t)
	const answer = "Hello there, friend."
	evs := [][]byte{
		chunkEvent(`[{"index":0,"delta":{"role":"assistant","content":"","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{"content":"Hello "},"logprobs":null,"finish_reason":null,"stop_reason":null,"token_ids":null}]`),
		chunkEvent(`[{"index":0,"text":"there, ","logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":1234,"role":"assistant","content":"there, ","tool_calls":null}}]`),
		chunkEvent(`[{"index":0,"delta":{"content":"friend."},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`),
		chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":"\n\n","matched_stop":"\n\n","native_finish_reason":"stop"}]`),
		sseData("[DONE]"),
	}
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run("stream/"+mode.String(), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Events: evs})
			rec := &recorder{Moderator: Direct(m)}
			p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			resp, body := rawPost(t, p.URL, "Hello", true, nil)
			if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) || audit["event"] != EventAllowed {
				t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
			}
			if rec.text() != answer {
				t.Errorf("judged %q, want %q", rec.text(), answer)
			}
		})
	}
	t.Run("whole", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Whole: []byte(`{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,` +
			`"message":{"role":"assistant","content":"` + answer + `","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},` +
			`"text":"` + answer + `","logprobs":null,"finish_reason":"stop","stop_reason":null,"content_filter_results":{}}],"usage":{"total_tokens":3}}`)})
		rec := &recorder{Moderator: Direct(m)}
		p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) || audit["event"] != EventAllowed {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
		}
		if rec.text() != answer {
			t.Errorf("judged %q, want %q", rec.text(), answer)
		}
	})
}

// TestWholeCutKeepsOnlyJudgedText: a flagged non-streamed answer returned
// cut (refusal "completion", or an ext_proc answer whose status already
// went) is rebuilt from the text before the flagging run: its choice
// keeps index, role, the judged text fields and the new finish_reason,
// and loses every other field (tool calls, annotations, Azure's filter
// results), which came with the text that was cut.
func TestWholeCutKeepsOnlyJudgedText(t *testing.T) {
	m := tinyModel(t)
	const answer = "Sure, here it is. EVIL SECRETPAYLOAD follows."
	whole := []byte(`{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","usage":{"total_tokens":9},"choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"` + answer + `","refusal":null,"annotations":[{"type":"url_citation","url_citation":{"title":"SECRETPAYLOAD"}}],` +
		`"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"q\":\"SECRETPAYLOAD\"}"}}]},` +
		`"logprobs":null,"finish_reason":"tool_calls","stop_reason":null,"content_filter_results":{"hate":{"filtered":false}}}]}`)
	check := func(t *testing.T, body []byte) {
		t.Helper()
		var got struct {
			ID    string
			Usage struct {
				TotalTokens int `json:"total_tokens"`
			}
			Choices []map[string]json.RawMessage
		}
		if err := json.Unmarshal(body, &got); err != nil || len(got.Choices) != 1 {
			t.Fatalf("%v: %s", err, body)
		}
		var keys []string
		for k := range got.Choices[0] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if fmt.Sprint(keys) != "[finish_reason index logprobs message]" || string(got.Choices[0]["finish_reason"]) != `"content_filter"` ||
			string(got.Choices[0]["logprobs"]) != "null" || got.ID != "chatcmpl-x" || got.Usage.TotalTokens != 9 {
			t.Errorf("choice %s", body)
		}
		var msg map[string]any
		_ = json.Unmarshal(got.Choices[0]["message"], &msg)
		content, _ := msg["content"].(string)
		if len(msg) != 3 || msg["role"] != "assistant" || msg["refusal"] != nil || !strings.HasPrefix(content, "Sure, here it is.") ||
			!strings.HasPrefix(answer, content) || strings.Contains(content, "EVIL") {
			t.Errorf("message %v", msg)
		}
		if bytes.Contains(body, []byte("SECRETPAYLOAD")) {
			t.Errorf("text after the cut reaches the client: %s", body)
		}
	}
	t.Run("handler", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Whole: whole})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Refusal: RefusalCompletion}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if rec := p.lastRecord(t); resp.StatusCode != 200 || rec["event"] != EventResponseFlagged {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, rec, body)
		}
		check(t, body)
	})
	t.Run("external, status sent", func(t *testing.T) {
		ext, err := NewExternal(Config{DefaultTenant: Tenant{Policy: safePolicy(m)}}, markModerator{Direct(m)})
		if err != nil {
			t.Fatal(err)
		}
		c := startAnswer(t, ext, false)
		a := c.Whole(200, whole, true)
		if a == nil || a.Status != 200 {
			t.Fatalf("answer %+v", a)
		}
		check(t, a.Body)
	})
}

// TestCutResponseRebuildsTheChoice: cutResponse (every whole answer cut:
// content_filter, the finish_reason "length" of one too long for the guard)
// keeps no field of the choice that could spell the text after the cut,
// logprobs and an audio transcript included, whatever the parser let in.
func TestCutResponseRebuildsTheChoice(t *testing.T) {
	const answer = "Sure, here it is. EVIL SECRETPAYLOAD follows."
	body := []byte(`{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","usage":{"total_tokens":9},"choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"` + answer + `","refusal":null,"audio":{"id":"a","transcript":"` + answer + `"},` +
		`"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"SECRETPAYLOAD"}}]},` +
		`"logprobs":{"content":[{"token":" SECRETPAYLOAD","logprob":0,"bytes":null,"top_logprobs":[]}]},"text":"` + answer + `","finish_reason":"stop"}]}`)
	m := textFields{Content: new(string)}
	*m.Content = answer
	f := newFeeder()
	ev := &eventText{}
	if err := feedFields(f, ev, &m); err != nil {
		t.Fatal(err)
	}
	f.finish()
	f.end(ev)
	for _, c := range []struct {
		reason string
		info   *cutInfo
		want   string
	}{
		{finishContentFilter, &cutInfo{Reason: EventResponseFlagged, Token: 3},
			`{"choices":[{"finish_reason":"content_filter","index":0,"logprobs":null,"message":{"content":"Sure, here it is.","refusal":null,"role":"assistant"}}],` +
				`"created":1,"id":"chatcmpl-x","model":"m","object":"chat.completion","streamguard":{"reason":"response_flagged","token":3},"usage":{"total_tokens":9}}`},
		{finishLength, &cutInfo{Reason: EventContextLength, Token: 5},
			`{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"message":{"content":"Sure, here it is.","refusal":null,"role":"assistant"}}],` +
				`"created":1,"id":"chatcmpl-x","model":"m","object":"chat.completion","streamguard":{"reason":"context_length_exceeded","token":5},"usage":{"total_tokens":9}}`},
	} {
		out, err := cutResponse(body, ev, strings.Index(answer, " EVIL"), &m, c.reason, c.info)
		if err != nil || string(out) != c.want {
			t.Errorf("%s: %v\n got %s\nwant %s", c.reason, err, out, c.want)
		}
	}
}

// TestHoldBackQueueBounded: in hold-back, events without text (comments,
// tool-call chunks, empty deltas) queue behind the text that waits for its
// look-ahead. The queue is bounded as a whole response is (4 x
// MaxRequestBytes, each event counted with its overhead): past it the
// stream ends with an upstream_too_large error event, the held text is not
// released and the queue is let go. Through the handler and an external
// driver alike.
func TestHoldBackQueueBounded(t *testing.T) {
	m := tinyModel(t)
	const maxRequest = 16 << 10 // events may queue up to 64 KiB
	text := chunkEvent(`[{"index":0,"delta":{"role":"assistant","content":"Hello there, how are"}}]`)
	comment := append(append([]byte(": "), bytes.Repeat([]byte("x"), 4<<10)...), "\n\n"...)
	const comments = 32 // 128 KiB
	t.Run("handler", func(t *testing.T) {
		evs := [][]byte{text}
		for range comments {
			evs = append(evs, comment)
		}
		evs = append(evs, chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`), sseData("[DONE]"))
		up := newFakeUpstream(t, upstreamSpec{Events: evs})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: HoldBack}, func(c *Config) { c.MaxRequestBytes = maxRequest })
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		rec := p.lastRecord(t)
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"code":"upstream_too_large"`)) || rec["event"] != EventUpstreamError || rec["code"] != "upstream_too_large" {
			t.Fatalf("status %d, audit %v, body %.300s", resp.StatusCode, rec, body)
		}
		if bytes.Contains(body, []byte("Hello there")) || bytes.Contains(body, []byte("[DONE]")) || bytes.Contains(body, []byte(": xxx")) {
			t.Errorf("held events were released: %.300s", body)
		}
	})
	t.Run("external", func(t *testing.T) {
		outcomes := make(chan Outcome, 4)
		ext, err := NewExternal(Config{DefaultTenant: Tenant{Policy: safePolicy(m), Mode: HoldBack}, MaxRequestBytes: maxRequest,
			Observe: func(o Outcome) { outcomes <- o }}, Direct(m))
		if err != nil {
			t.Fatal(err)
		}
		c := startAnswer(t, ext, true)
		rl := c.Stream(nil)
		rl.Push(text)
		for range comments {
			rl.Push(comment)
		}
		select {
		case <-rl.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the relay did not end")
		}
		out := rl.Take()
		if !bytes.Contains(out, []byte(`"code":"upstream_too_large"`)) || bytes.Contains(out, []byte("Hello there")) || bytes.Contains(out, []byte(": xxx")) {
			t.Errorf("client got %.300s", out)
		}
		if o := <-outcomes; o.Event != EventUpstreamError {
			t.Errorf("outcome %+v", o)
		}
		if len(rl.r.queue) != 0 || rl.r.queued != 0 {
			t.Errorf("the ended relay still holds %d events (%d bytes)", len(rl.r.queue), rl.r.queued)
		}
	})
}

// startAnswer starts an External call for "Hello" (streamed or not) and
// its answer's headers: 200, as an event stream or JSON. The call is closed
// when the test ends.
func startAnswer(t *testing.T, ext *External, stream bool) *Call {
	t.Helper()
	c, ans := ext.Start(context.Background(), nil, http.Header{}, mustJSON(map[string]any{"model": "m", "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": "Hello"}}}))
	if ans != nil {
		t.Fatalf("refused: %d %s", ans.Status, ans.Body)
	}
	t.Cleanup(func() { c.Close() })
	h, want := http.Header{}, WholeResponse
	h.Set("Content-Type", "application/json")
	if stream {
		h.Set("Content-Type", "text/event-stream")
		want = StreamResponse
	}
	if k, _ := c.Response(200, h); k != want {
		t.Fatalf("kind %v, want %v", k, want)
	}
	return c
}
