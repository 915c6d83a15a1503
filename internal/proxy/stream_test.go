package proxy

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/streamguard/streamguard/guard"
)

func withAnswer(content string) func(string) []guard.Message {
	return func(p string) []guard.Message {
		return []guard.Message{{Role: "user", Content: p}, {Role: "assistant", Content: content}}
	}
}

// TestSafeStreamIsByteIdentical: a response the guard does not flag reaches
// the client exactly as the upstream wrote it, in both modes and every
// chunking, and the OpenAI client reads the whole text.
func TestSafeStreamIsByteIdentical(t *testing.T) {
	m := tinyModel(t)
	pol := safePolicy(m)
	if r, err := m.Moderate(context.Background(), withAnswer(testResponse)("Hello there."), &pol); err != nil || r.FlaggedIndex >= 0 || r.Prompt.Flagged {
		t.Fatalf("the safe policy flags: %+v %v", r, err)
	}
	for _, mode := range []Mode{HoldBack, PassThrough} {
		for _, ch := range chunkings {
			t.Run(mode.String()+"/"+ch.name, func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, ch.delta), Write: ch.write})
				p := newTestProxy(t, up.URL, Direct(m), Tenant{Name: "t1", Policy: pol, Mode: mode}, nil)
				resp, body := rawPost(t, p.URL, "Hello there.", true, nil)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if want := up.streamBody(); !bytes.Equal(body, want) {
					t.Fatalf("body differs from the upstream's:\n got %q\nwant %q", body, want)
				}
				if resp.Header.Get("X-Upstream") != "fake" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
					t.Errorf("upstream headers not kept: %v", resp.Header)
				}
				if rec := p.lastRecord(t); rec["event"] != EventAllowed || rec["tenant"] != "t1" {
					t.Errorf("audit record %v", rec)
				}

				if ch.write == 1 {
					return // the raw check above is the stricter one; spare the race detector a second slow read
				}
				got, err := streamChat(context.Background(), p.URL, "Hello there.")
				if err != nil {
					t.Fatal(err)
				}
				if got.Content != testResponse || got.Finish != openai.FinishReasonStop {
					t.Errorf("client read %q (finish %q)", got.Content, got.Finish)
				}
				p.wait(t, 1)
			})
		}
	}
}

// TestFlaggedStreamIsCut: a response the guard flags is cut at the token
// the guard API flags when fed directly, in both modes and every chunking.
// Hold-back shows exactly the text before the run that flagged (so none
// of the run's tokens); pass-through shows at least the flagged token's
// text. Both end with finish_reason content_filter and cancel the upstream.
func TestFlaggedStreamIsCut(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	before := textBefore(fc.Tokens, fc.RunStart)
	through := textBefore(fc.Tokens, fc.Index+1)
	t.Logf("flag at token %d (run from %d) of %d: hold-back shows %d of %d bytes", fc.Index, fc.RunStart, len(fc.Tokens), len(before), len(testResponse))
	if !strings.HasPrefix(testResponse, through) || len(before) == 0 || len(through) >= len(testResponse) {
		t.Fatalf("unexpected flag case: %q / %q", before, through)
	}
	for _, mode := range []Mode{HoldBack, PassThrough} {
		for _, ch := range chunkings {
			t.Run(mode.String()+"/"+ch.name, func(t *testing.T) {
				// Hang: the upstream never finishes by itself, so the cut
				// must cancel it.
				up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, ch.delta), Write: ch.write, Hang: true})
				p := newTestProxy(t, up.URL, Direct(m), Tenant{Name: "t1", Policy: fc.Policy, Mode: mode}, nil)
				got, err := streamChat(context.Background(), p.URL, fc.Prompt)
				if err != nil {
					t.Fatal(err)
				}
				if got.Finish != openai.FinishReasonContentFilter {
					t.Errorf("finish %q, want content_filter", got.Finish)
				}
				switch mode {
				case HoldBack:
					if got.Content != before {
						t.Errorf("hold-back showed %q\nwant the text before the flagged run %q", got.Content, before)
					}
				case PassThrough:
					if !strings.HasPrefix(testResponse, got.Content) || !strings.HasPrefix(got.Content, through) {
						t.Errorf("pass-through showed %q\nwant a prefix of the response holding %q", got.Content, through)
					}
				}
				rec := p.lastRecord(t)
				if rec["event"] != EventResponseFlagged || rec["token"] != float64(fc.Index) || rec["run_start"] != float64(fc.RunStart) {
					t.Errorf("audit record %v, want token %d run_start %d", rec, fc.Index, fc.RunStart)
				}
				up.waitCanceled(t)
			})
		}
	}
}

// TestFlagInFinishChunk: the upstream sends its last text in the chunk
// that carries finish_reason; a flag there still shows exactly the text
// before the flagged run, and never the upstream's "stop".
func TestFlagInFinishChunk(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	up := newFakeUpstream(t, upstreamSpec{Content: []string{testResponse[:3], testResponse[3:]}, FinishWithText: true})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
	got, err := streamChat(context.Background(), p.URL, fc.Prompt)
	if err != nil {
		t.Fatal(err)
	}
	if got.Content != textBefore(fc.Tokens, fc.RunStart) || got.Finish != openai.FinishReasonContentFilter {
		t.Errorf("showed %q (%s), want %q", got.Content, got.Finish, textBefore(fc.Tokens, fc.RunStart))
	}
	p.wait(t, 1)
}

// TestHoldBackRawEventsBeforeCut checks the wire form of a hold-back cut:
// the events before it are the upstream's own bytes, the partial chunk and
// the finish keep the upstream's id, model and created, and [DONE] ends it.
func TestHoldBackRawEventsBeforeCut(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 40), Hang: true})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
	resp, body := rawPost(t, p.URL, fc.Prompt, true, nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Streamguard-Mode") != "hold-back" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	events := strings.SplitAfter(string(body), "\n\n")
	events = events[:len(events)-1] // the empty tail
	upEvents := upstreamSpec{Content: splitRunes(testResponse, 40), Hang: true}.events()
	n := len(events)
	if n < 3 || events[n-1] != "data: [DONE]\n\n" {
		t.Fatalf("stream does not end with [DONE]: %q", body)
	}
	fin := events[n-2]
	for _, want := range []string{`"id":"chatcmpl-fake42"`, `"model":"fake-llm"`, `"created":1700000000`, `"finish_reason":"content_filter"`, `"reason":"response_flagged"`} {
		if !strings.Contains(fin, want) {
			t.Errorf("finish chunk %q lacks %s", fin, want)
		}
	}
	verbatim := 0
	for verbatim < n-2 && verbatim < len(upEvents) && events[verbatim] == string(upEvents[verbatim]) {
		verbatim++
	}
	if verbatim < n-3 {
		t.Errorf("event %d is neither the upstream's nor the partial chunk: %q", verbatim, events[verbatim])
	}
	p.wait(t, 1)
}

// TestThinkingIsJudged: reasoning deltas and a <think> block written in the
// content are judged as the chat template renders them; the cut comes at
// the token the guard API flags on the whole conversation. The first
// reasoning text flags inside the reasoning, the second in the answer.
func TestThinkingIsJudged(t *testing.T) {
	m := tinyModel(t)
	answer := "Mix flour and water, knead, rest, bake at 220 °C. テキストも少し。Enjoy your bread!"
	for _, reasoning := range []string{"The user wants bread. I should list the steps, keep it short and friendly.", "Bread: give the steps, short and friendly."} {
		cases := []struct {
			name string
			spec func(ch chunking) upstreamSpec
			msg  guard.Message
		}{
			{"reasoning_content", func(ch chunking) upstreamSpec {
				return upstreamSpec{Reasoning: splitRunes("\n"+reasoning+"\n\n", ch.delta), Content: splitRunes("\n\n"+answer, ch.delta), Write: ch.write, Hang: true}
			}, guard.Message{Role: "assistant", ReasoningContent: reasoning, Content: answer}},
			{"reasoning", func(ch chunking) upstreamSpec {
				return upstreamSpec{Reasoning: splitRunes(reasoning, ch.delta), ReasoningField: "reasoning", Content: splitRunes(answer, ch.delta), Write: ch.write, Hang: true}
			}, guard.Message{Role: "assistant", ReasoningContent: reasoning, Content: answer}},
			{"inline think", func(ch chunking) upstreamSpec {
				return upstreamSpec{Content: splitRunes("<think>\n"+reasoning+"\n</think>\n\n"+answer, ch.delta), Write: ch.write, Hang: true}
			}, guard.Message{Role: "assistant", Content: "<think>\n" + reasoning + "\n</think>\n\n" + answer}},
		}
		for _, c := range cases {
			fc := findFlagCase(t, m, func(p string) []guard.Message { return []guard.Message{{Role: "user", Content: p}, c.msg} }, 0.9)
			t.Logf("%s: flag at token %d of %d; judged text before the run: %q", c.name, fc.Index, len(fc.Tokens), textBefore(fc.Tokens, fc.RunStart))
			for _, mode := range []Mode{HoldBack, PassThrough} {
				for _, ch := range chunkings[1:3] { // char deltas with 1-byte writes: see TestFlaggedStreamIsCut
					t.Run(fmt.Sprintf("%s/%d/%s/%s", c.name, fc.Index, mode, ch.name), func(t *testing.T) {
						up := newFakeUpstream(t, c.spec(ch))
						p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy, Mode: mode}, nil)
						got, err := streamChat(context.Background(), p.URL, fc.Prompt)
						if err != nil {
							t.Fatal(err)
						}
						if got.Finish != openai.FinishReasonContentFilter {
							t.Errorf("finish %q", got.Finish)
						}
						if mode == HoldBack && c.name != "reasoning" { // the client library reads reasoning_content only
							if g, w := squeeze(got.Reasoning+got.Content), squeeze(textBefore(fc.Tokens, fc.RunStart)); g != w {
								t.Errorf("hold-back showed %q\nwant the text before the flagged run %q", g, w)
							}
						}
						rec := p.lastRecord(t)
						if rec["event"] != EventResponseFlagged || rec["token"] != float64(fc.Index) {
							t.Errorf("audit record %v, want token %d", rec, fc.Index)
						}
						up.waitCanceled(t)
					})
				}
			}
		}
	}
}

// squeeze drops the think tags and newlines, which the template moves
// around, to compare the words shown with the words judged.
func squeeze(s string) string {
	return strings.NewReplacer("<think>", "", "</think>", "", "\n", "").Replace(s)
}

// An upstream that closes in the middle of an event: the client gets that
// event ended (some servers end without the final blank line) and then the
// proxy's error event on its own, never the two run together.
func TestStreamCutMidEvent(t *testing.T) {
	m := tinyModel(t)
	chunk := func(s string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + s + `"},"finish_reason":null}]}`
	}
	for _, mode := range []Mode{HoldBack, PassThrough} {
		for _, tail := range []string{"", "\n", "\r\n"} {
			t.Run(fmt.Sprintf("%v/%q", mode, tail), func(t *testing.T) {
				up := newFakeUpstream(t, upstreamSpec{Events: [][]byte{[]byte(chunk("A") + "\n\n" + chunk("B") + tail)}})
				p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
				_, body := rawPost(t, p.URL, "Hello", true, nil)
				p.wait(t, 1)
				events := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n\n")
				var last string
				for _, e := range events {
					if e != "" {
						last = e
					}
				}
				if !strings.HasPrefix(last, `data: {"error"`) || !strings.Contains(last, "upstream_disconnected") || strings.Count(last, "data:") != 1 {
					t.Fatalf("last event %q of %q", last, body)
				}
			})
		}
	}
}
