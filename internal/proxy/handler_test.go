package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// flagAll flags every prompt: a threshold of 0 makes every verdict non-safe.
func flagAll(m *guard.Model) guard.Policy {
	return guard.Policy{Mode: guard.Strict, Thresholds: allThresholds(m, 0)}
}

func TestPromptFlaggedNeverCallsUpstream(t *testing.T) {
	m := tinyModel(t)
	for _, refusal := range []string{RefusalError, RefusalCompletion} {
		for _, stream := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/stream=%v", refusal, stream), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: []string{"never sent"}})
				p := newTestProxy(t, up.URL, Direct(m), Tenant{Name: "acme", Policy: flagAll(m), Refusal: refusal, RefusalMessage: "No."}, nil)
				c := openaiClient(p.URL)
				req := openai.ChatCompletionRequest{Model: "fake-llm", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "How do I pick a lock?"}}}
				var content string
				var finish openai.FinishReason
				var err error
				if stream {
					var got streamed
					got, err = streamChat(context.Background(), p.URL, "How do I pick a lock?")
					content, finish = got.Content, got.Finish
				} else {
					var resp openai.ChatCompletionResponse
					resp, err = c.CreateChatCompletion(context.Background(), req)
					if err == nil {
						content, finish = resp.Choices[0].Message.Content, resp.Choices[0].FinishReason
					}
				}
				switch refusal {
				case RefusalError:
					var apiErr *openai.APIError
					if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || apiErr.Code != "content_filter" || apiErr.Param == nil || *apiErr.Param != "messages" {
						t.Fatalf("want a 400 content_filter error for messages, got %v", err)
					}
				case RefusalCompletion:
					if err != nil || content != "No." || finish != openai.FinishReasonContentFilter {
						t.Fatalf("refusal completion: %q %q %v", content, finish, err)
					}
				}
				rec := p.lastRecord(t)
				if rec["event"] != EventPromptFlagged || rec["tenant"] != "acme" || rec["level"] == nil || rec["category"] == nil {
					t.Errorf("audit record %v", rec)
				}
				if up.calls != 0 {
					t.Errorf("the upstream was called %d times", up.calls)
				}
			})
		}
	}
}

func TestNonStreamedResponse(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	t.Run("safe is byte-identical", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{testResponse}})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, fc.Prompt, false, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
		p.wait(t, 1)
	})
	t.Run("flagged completion is cut", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{testResponse}})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy, Refusal: RefusalCompletion}, nil)
		resp, err := openaiClient(p.URL).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
			Model: "fake-llm", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: fc.Prompt}}})
		if err != nil {
			t.Fatal(err)
		}
		if c := resp.Choices[0]; c.Message.Content != textBefore(fc.Tokens, fc.RunStart) || c.FinishReason != openai.FinishReasonContentFilter {
			t.Errorf("got %q (%s)", c.Message.Content, c.FinishReason)
		}
		if resp.ID != "chatcmpl-fake42" || resp.Usage.TotalTokens != 59 {
			t.Errorf("upstream fields not kept: %+v", resp)
		}
		if rec := p.lastRecord(t); rec["event"] != EventResponseFlagged || rec["token"] != float64(fc.Index) {
			t.Errorf("audit record %v", rec)
		}
	})
	t.Run("flagged error", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{testResponse}})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
		resp, body := rawPost(t, p.URL, fc.Prompt, false, nil)
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"content_filter"`) {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
		// What flagged goes beside the error, as a cut stream says it.
		var e struct {
			Error struct {
				Param *string `json:"param"`
			} `json:"error"`
			Streamguard *cutInfo `json:"streamguard"`
		}
		rec := p.lastRecord(t)
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Param != nil || e.Streamguard == nil ||
			*e.Streamguard != (cutInfo{Reason: EventResponseFlagged, Token: fc.Index, Level: fc.Tokens[fc.Index].Level, Category: fc.Tokens[fc.Index].Category, Request: rec["request_id"].(string)}) {
			t.Errorf("body %s, audit %v", body, rec)
		}
	})
}

// TestNFDTextHoldBack streams text that is not in NFC (decomposed accents):
// the tokens' decoded text differs from the upstream's bytes there, and the
// aligner must still release everything, byte-identical.
func TestNFDTextHoldBack(t *testing.T) {
	m := tinyModel(t)
	text := "Cafe\u0301 cre\u0300me, nai\u0308ve fac\u0327ade and more plain words after it."
	up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(text, 2), Write: 5})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Lookahead: 1}, nil)
	resp, body := rawPost(t, p.URL, "Hello", true, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) {
		t.Fatalf("status %d, body differs:\n%s", resp.StatusCode, body)
	}
	p.wait(t, 1)
}

func TestUpstreamErrors(t *testing.T) {
	m := tinyModel(t)
	ten := Tenant{Policy: safePolicy(m)}
	t.Run("OpenAI error relayed", func(t *testing.T) {
		body := `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
		up := newFakeUpstream(t, upstreamSpec{Status: 429, ErrBody: body})
		p := newTestProxy(t, up.URL, Direct(m), ten, nil)
		_, err := streamChat(context.Background(), p.URL, "Hello")
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 429 || apiErr.Code != "rate_limit_exceeded" {
			t.Fatalf("got %v", err)
		}
		p.wait(t, 1)
	})
	t.Run("non-JSON error wrapped", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Status: 502, ErrBody: "<html>Bad Gateway</html>"})
		p := newTestProxy(t, up.URL, Direct(m), ten, nil)
		_, err := streamChat(context.Background(), p.URL, "Hello")
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 502 || apiErr.Code != "upstream_error" || !strings.Contains(apiErr.Message, "Bad Gateway") {
			t.Fatalf("got %v", err)
		}
		p.wait(t, 1)
	})
	t.Run("unreachable", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{})
		up.Close()
		p := newTestProxy(t, up.URL, Direct(m), ten, nil)
		_, err := streamChat(context.Background(), p.URL, "Hello")
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 502 || apiErr.Code != "upstream_unreachable" {
			t.Fatalf("got %v", err)
		}
		p.wait(t, 1)
	})
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run("disconnect mid-stream/"+mode.String(), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 10), DropAfter: 5})
			p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			got, err := streamChat(context.Background(), p.URL, "Hello")
			var apiErr *openai.APIError
			if !errors.As(err, &apiErr) || apiErr.Code != "upstream_disconnected" {
				t.Fatalf("got %v", err)
			}
			if !strings.HasPrefix(testResponse, got.Content) {
				t.Errorf("content %q", got.Content)
			}
			if rec := p.lastRecord(t); rec["event"] != EventUpstreamError {
				t.Errorf("audit %v", rec)
			}
		})
	}
	t.Run("idle timeout", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hi"}, Hang: true})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: PassThrough}, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
		_, err := streamChat(context.Background(), p.URL, "Hello")
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != "upstream_timeout" {
			t.Fatalf("got %v", err)
		}
		p.wait(t, 1)
		up.waitCanceled(t)
	})
}

// TestClientDisconnectCancelsUpstream: the client goes away mid-stream; the
// proxy must cancel the upstream request.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	m := tinyModel(t)
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run(mode.String(), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hello", " there", ", friend."}, Hang: true})
			p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode, Lookahead: 1}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			st, err := openaiClient(p.URL).CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
				Model: "fake-llm", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "Hello"}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil { // the role chunk
				t.Fatal(err)
			}
			cancel()
			st.Close()
			up.waitCanceled(t)
			if rec := p.lastRecord(t); rec["event"] != EventClientClosed {
				t.Errorf("audit %v", rec)
			}
		})
	}
}

// overloaded refuses every stream.
type overloaded struct{}

func (overloaded) Open(context.Context, guard.Policy) (Stream, error) {
	return nil, fmt.Errorf("scheduler: KV budget full: %w", ErrOverloaded)
}

func TestOverload(t *testing.T) {
	up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 7)})
	t.Run("fail closed", func(t *testing.T) {
		p := newTestProxy(t, up.URL, overloaded{}, Tenant{}, nil)
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "guard_overloaded") {
			t.Fatalf("status %d %v %s", resp.StatusCode, resp.Header, body)
		}
		if rec := p.lastRecord(t); rec["event"] != EventOverloaded {
			t.Errorf("audit %v", rec)
		}
	})
	t.Run("fail open", func(t *testing.T) {
		p := newTestProxy(t, up.URL, overloaded{}, Tenant{FailOpen: true}, nil)
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Streamguard-Unjudged") != "1" || !bytes.Equal(body, up.streamBody()) {
			t.Fatalf("status %d %v %s", resp.StatusCode, resp.Header, body)
		}
		if rec := p.lastRecord(t); rec["event"] != EventUnjudged || !strings.Contains(rec["reason"].(string), "overloaded") {
			t.Errorf("audit %v", rec)
		}
	})
}

// failing wraps a moderator whose streams fail after n AppendText calls
// (after the prompt was judged and the response headers were sent), with
// err (nil: a plain error). judged gets the text of the calls that
// succeeded.
type failing struct {
	Moderator
	n      int
	err    error
	judged *strings.Builder
}

type failingStream struct {
	Stream
	left   *atomic.Int32
	err    error
	judged *strings.Builder
}

func (f failing) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := f.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	left := &atomic.Int32{}
	left.Store(int32(f.n))
	return failingStream{s, left, f.err, f.judged}, nil
}

func (f failingStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	if f.left.Add(-1) < 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, errors.New("guard: the scheduler failed")
	}
	tvs, err := f.Stream.AppendText(ctx, text)
	if err == nil && f.judged != nil {
		f.judged.WriteString(text)
	}
	return tvs, err
}

func (f failingStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return f.tag(ctx, f.Stream.StartToolCall, tokenizer.ToolCallTag)
}

func (f failingStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return f.tag(ctx, f.Stream.EndToolCall, tokenizer.ToolCallEndTag)
}

// tag is AppendText for a tool call's tag (call), spelled text.
func (f failingStream) tag(ctx context.Context, call func(context.Context) ([]guard.TokenVerdict, error), text string) ([]guard.TokenVerdict, error) {
	if f.left.Add(-1) < 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, errors.New("guard: the scheduler failed")
	}
	tvs, err := call(ctx)
	if err == nil && f.judged != nil {
		f.judged.WriteString(text)
	}
	return tvs, err
}

func TestGuardFailsMidStream(t *testing.T) {
	m := tinyModel(t)
	for _, open := range []bool{false, true} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(fmt.Sprintf("failopen=%v/%s", open, mode), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 20)})
				p := newTestProxy(t, up.URL, failing{Moderator: Direct(m)}, Tenant{Policy: safePolicy(m), Mode: mode, FailOpen: open}, nil)
				got, err := streamChat(context.Background(), p.URL, "Hello")
				rec := p.lastRecord(t)
				if open {
					if err != nil || got.Content != testResponse || rec["event"] != EventUnjudged {
						t.Fatalf("fail-open: %q %v, audit %v", got.Content, err, rec)
					}
					return
				}
				var apiErr *openai.APIError
				if !errors.As(err, &apiErr) || apiErr.Code != "guard_unavailable" || rec["event"] != EventGuardError {
					t.Fatalf("fail-closed: %v, audit %v", err, rec)
				}
			})
		}
	}
}

func TestBadRequests(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Content: []string{"x"}})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
	for _, c := range []struct{ body, want string }{
		{`{`, "not a chat-completions JSON object"},
		{`{"messages":[]}`, "at least one message"},
		{`{"messages":[{"role":"system","content":"be nice"}]}`, "no user message"},
		{`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, "no text to judge"},
		{`{"n":2,"messages":[{"role":"user","content":"hi"}]}`, "n=2"},
		{`{"messages":[{"role":"wizard","content":"hi"}]}`, `role "wizard"`},
		// What the answer would carry beside its text, unjudged: log
		// probabilities (tokens and alternatives), an audio answer.
		{`{"logprobs":true,"top_logprobs":5,"messages":[{"role":"user","content":"hi"}]}`, "logprobs: streamguard does not relay log probabilities"},
		{`{"modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"},"messages":[{"role":"user","content":"hi"}]}`, `modalities: streamguard judges text only, not an answer in "audio"`},
		{`{"Logprobs":true,"messages":[{"role":"user","content":"hi"}]}`, `"Logprobs" differs from "logprobs" only by case`},
		// Keys another parser would read differently.
		{`{"messages":[{"role":"user","content":"hi","Content":"other"}]}`, `"Content" differs from "content" only by case`},
		{`{"messages":[{"role":"user","Content":"hi"}]}`, `"Content" differs from "content" only by case`},
		{`{"Messages":[{"role":"user","content":"hi"}]}`, `"Messages" differs from "messages" only by case`},
		{`{"N":2,"messages":[{"role":"user","content":"hi"}]}`, `"N" differs from "n" only by case`},
		{`{"messages":[{"role":"user","content":"hi"}],"messages":[{"role":"user","content":"other"}]}`, `"messages" repeated`},
		{`{"messages":[{"role":"user","content":"hi","content":"other"}]}`, `"content" repeated`},
		{`{"messages":[{"role":"user","content":[{"type":"text","text":"a","Text":"b"}]}]}`, `"Text" differs`},
		{`{"messages":[{"role":"user","content":"hi"}]} {}`, "data after the JSON value"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\xff\"}]}", "invalid UTF-8"},
	} {
		resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error apiError }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %q, want 400 with %q", c.body, resp.StatusCode, e.Error.Message, c.want)
		}
		p.wait(t, 1)
	}
	if up.calls != 0 {
		t.Errorf("the upstream was called")
	}
}

func TestParseRequest(t *testing.T) {
	r, err := parseRequest([]byte(`{"model":"m","stream":true,"messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"first"},{"type":"image_url"},{"type":"text","text":"second"}]},
		{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},
		{"role":"tool","content":"42"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []guard.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "first\nsecond"}}
	if !r.Stream || r.Model != "m" || fmt.Sprint(r.Messages) != fmt.Sprint(want) {
		t.Errorf("got %+v", r)
	}
	// The image part is skipped, and noted; the tool result after the
	// user turn is judged after it.
	if fmt.Sprint(r.Skipped) != "[image_url]" || r.Trailing != "42" || r.IncludeUsage {
		t.Errorf("skipped %v, trailing %q, include_usage %v", r.Skipped, r.Trailing, r.IncludeUsage)
	}
	r, err = parseRequest([]byte(`{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"input_audio","input_audio":{"data":"aGk=","format":"wav"}}]}]}`))
	if err != nil || !r.IncludeUsage || fmt.Sprint(r.Skipped) != "[input_audio]" {
		t.Errorf("got %+v %v", r, err)
	}
	// Log probabilities turned off and a text answer are no refusal.
	if _, err = parseRequest([]byte(`{"logprobs":false,"top_logprobs":null,"modalities":["text"],"messages":[{"role":"user","content":"hi"}]}`)); err != nil {
		t.Errorf("logprobs false: %v", err)
	}
	// include_usage counts only for a stream; its key is matched exactly.
	if r, err = parseRequest([]byte(`{"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)); err != nil || r.IncludeUsage {
		t.Errorf("not streamed: got %+v %v", r, err)
	}
	if _, err = parseRequest([]byte(`{"stream":true,"stream_options":{"Include_Usage":true},"messages":[{"role":"user","content":"hi"}]}`)); err == nil {
		t.Errorf("a key in another case was accepted")
	}
}

func TestNewHandlerChecks(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no upstream"},
		{Config{Upstream: "ftp://x"}, "scheme"},
		{Config{Upstream: "http://"}, "no host"},
		{Config{Upstream: "http://x", DefaultTenant: Tenant{Refusal: "shout"}}, "refusal"},
		{Config{Upstream: "http://x", DefaultTenant: Tenant{Lookahead: -1}}, "lookahead"},
	} {
		if _, err := NewHandler(c.cfg, overloaded{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	for base, want := range map[string]string{
		"https://api.openai.com":      "https://api.openai.com/v1/chat/completions",
		"https://api.openai.com/v1/":  "https://api.openai.com/v1/chat/completions",
		"http://127.0.0.1:8000/proxy": "http://127.0.0.1:8000/proxy/v1/chat/completions",
	} {
		if got, err := endpoint(base, "/chat/completions"); err != nil || got != want {
			t.Errorf("%s: %s %v", base, got, err)
		}
	}
	for _, s := range []string{"hold-back", "pass-through"} {
		if m, err := ParseMode(s); err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
}
