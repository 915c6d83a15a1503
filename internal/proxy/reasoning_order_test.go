package proxy

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// TestReasoningAfterAnswerRefused: a chat-completions stream whose
// reasoning comes again after content or a tool call (interleaved
// thinking) is refused with upstream_bad_response. A client joins that
// reasoning to the reasoning before it, which the template writes ahead of
// the answer; judged where it came, the guard would read other ids than
// the model is shown. In hold-back the text after the reasoning's return
// never reaches the client.
func TestReasoningAfterAnswerRefused(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		name   string
		deltas []string
	}{
		{"content then reasoning", []string{`{"reasoning_content":"Plan."}`, `{"content":"Answer."}`, `{"reasoning_content":"LATE-THOUGHT"}`, `{"content":" LATE-ANSWER"}`}},
		{"reasoning after a tool call", []string{`{"reasoning_content":"Plan."}`,
			`{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}`,
			`{"reasoning_content":"LATE-THOUGHT"}`}},
		{"the reasoning field", []string{`{"reasoning":"Plan."}`, `{"content":"Answer."}`, `{"reasoning":"LATE-THOUGHT"}`}},
	} {
		for _, mode := range []Mode{HoldBack, PassThrough} {
			t.Run(c.name+"/"+mode.String(), func(t *testing.T) {
				var evs [][]byte
				for _, d := range c.deltas {
					evs = append(evs, chunkEvent(`[{"index":0,"delta":`+d+`,"finish_reason":null}]`))
				}
				evs = append(evs, chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`), sseData("[DONE]"))
				up := newFakeUpstream(t, upstreamSpec{Events: evs})
				p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
				_, body := rawPost(t, p.URL, "Hello", true, nil)
				if !strings.Contains(string(body), "upstream_bad_response") {
					t.Errorf("the stream was not refused: %s", body)
				}
				if strings.Contains(string(body), "LATE-") {
					t.Errorf("text from the refused event or after it reached the client: %s", body)
				}
				if rec := p.lastRecord(t); rec["event"] != EventUpstreamError || rec["code"] != "upstream_bad_response" {
					t.Errorf("audit record %v", rec)
				}
			})
		}
	}
}

// TestLateNewlineReasoningPasses: reasoning of newlines only after the
// answer began changes nothing the template writes (it strips the
// reasoning's newlines), so the stream goes on, in both modes, and the
// guard reads what it reads without it.
func TestLateNewlineReasoningPasses(t *testing.T) {
	m := tinyModel(t)
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run(mode.String(), func(t *testing.T) {
			evs := [][]byte{
				chunkEvent(`[{"index":0,"delta":{"reasoning_content":"Plan."},"finish_reason":null}]`),
				chunkEvent(`[{"index":0,"delta":{"content":"Answer"},"finish_reason":null}]`),
				chunkEvent(`[{"index":0,"delta":{"reasoning_content":"\n\n"},"finish_reason":null}]`),
				chunkEvent(`[{"index":0,"delta":{"content":" given."},"finish_reason":null}]`),
				chunkEvent(`[{"index":0,"delta":{},"finish_reason":"stop"}]`), sseData("[DONE]"),
			}
			up := newFakeUpstream(t, upstreamSpec{Events: evs})
			rec := &idRecorder{Moderator: Direct(m)}
			p := newTestProxy(t, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			_, body := rawPost(t, p.URL, "Hello", true, nil)
			if strings.Contains(string(body), "upstream_bad_response") || !strings.Contains(string(body), " given.") || !strings.Contains(string(body), "[DONE]") {
				t.Fatalf("the stream did not go on: %s", body)
			}
			p.wait(t, 1)
			pol := safePolicy(m)
			whole, err := m.Moderate(context.Background(), []guard.Message{{Role: "user", Content: "Hello"},
				{Role: "assistant", ReasoningContent: "Plan.", Content: "Answer given."}}, &pol)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rec.got(), verdictIDs(whole.Tokens); !slices.Equal(got, want) {
				t.Errorf("the guard read %v, the template's layout is %v", got, want)
			}
		})
	}
}
