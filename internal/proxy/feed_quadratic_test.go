package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// wholeToolCalls is a whole chat completion whose message holds n tool
// calls, each a few bytes of text.
func wholeToolCalls(n int) []byte {
	calls := make([]any, n)
	for i := range calls {
		calls[i] = map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "f", "arguments": "{}"}}
	}
	return mustJSON(map[string]any{"id": "chatcmpl-fake42", "object": "chat.completion", "created": 1700000000, "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "tool_calls",
			"message": map[string]any{"role": "assistant", "content": nil, "tool_calls": calls}}}})
}

// TestWholeToolCallsLinear: a whole (non-streamed) chat completion's
// tool calls are fed one after the other before the guard is called (the
// moderator here fails at the first call), every piece (the newline,
// <tool_call>, the name, the arguments, </tool_call>) added to one op's
// text. Appended to a string, each piece copied the text so far: 4,000
// tiny calls (~250 KB) allocated 2.6 GB, and the limits allow 32 MiB
// bodies. The bytes allocated per upstream byte must not grow with the
// number of calls.
func TestWholeToolCallsLinear(t *testing.T) {
	m := tinyModel(t)
	perByte := map[int]uint64{}
	for _, n := range []int{1000, 4000} {
		body := wholeToolCalls(n)
		up := newFakeUpstream(t, upstreamSpec{Whole: body})
		p := newTestProxy(t, up.URL, attackStopAtAnswer{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
		var status int
		start := time.Now()
		alloc := attackAlloc(func() {
			resp, _ := rawPost(t, p.URL, "Hello there.", false, nil)
			status = resp.StatusCode
		})
		perByte[n] = alloc / uint64(len(body))
		t.Logf("%d calls: status %d, %d-byte body, %d MB allocated (x%d), %s", n, status, len(body), alloc>>20, perByte[n], time.Since(start))
	}
	if perByte[4000] > 2*perByte[1000] {
		t.Fatalf("bytes allocated per upstream byte grow with the number of tool calls (x%d at 1000 calls, x%d at 4000): quadratic, before the guard judged anything", perByte[1000], perByte[4000])
	}
}

// TestStreamedToolCallPiecesLinear: the same within one streamed chunk. A
// delta's tool_calls may hold many entries for the same call (index 0,
// arguments or name concatenated, as the SDKs assemble them), all fed
// before the relay takes the ops: one event of 8,000 argument pieces
// (~640 KB) allocated 1.3 GB, where a 4 MiB event is allowed, and the
// name, kept to compare with a name sent again, was copied per piece too.
// The bound, 60 bytes allocated per byte of the event, is far above the
// linear cost and far below the quadratic one.
func TestStreamedToolCallPiecesLinear(t *testing.T) {
	piece := strings.Repeat("a", 40)
	for _, field := range []string{"arguments", "name"} {
		t.Run(field, func(t *testing.T) {
			entries := []any{map[string]any{"index": 0, "id": "call_1", "type": "function", "function": map[string]any{"name": "f", "arguments": ""}}}
			if field == "name" {
				entries[0] = map[string]any{"index": 0, "id": "call_1", "type": "function", "function": map[string]any{"name": "f"}}
			}
			for i := range 8000 {
				// A name's pieces each differ from the name so far (the
				// whole name again is not judged twice).
				entries = append(entries, map[string]any{"index": 0, "function": map[string]any{field: fmt.Sprintf("%s%05d", piece[:35], i)}})
			}
			toolCallPiecesLinear(t, entries)
		})
	}
}

// toolCallPiecesLinear streams one chunk of the tool-call entries and
// checks the proxy's allocation against the chunk's size.
func toolCallPiecesLinear(t *testing.T, entries []any) {
	m := tinyModel(t)
	ev := func(b []byte) []byte { return append(append([]byte("data: "), b...), "\n\n"...) }
	big := ev(chunkJSON(map[string]any{"role": "assistant", "tool_calls": entries}, nil))
	events := [][]byte{big, ev(chunkJSON(map[string]any{}, "tool_calls")), []byte("data: [DONE]\n\n")}
	up := newFakeUpstream(t, upstreamSpec{Events: events})
	p := newTestProxy(t, up.URL, attackStopAtAnswer{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	start := time.Now()
	alloc := attackAlloc(func() {
		_, _ = rawPost(t, p.URL, "Hello there.", true, nil)
		p.wait(t, 1)
	})
	t.Logf("%d-byte event, %d MB allocated, %s", len(big), alloc>>20, time.Since(start))
	if limit := uint64(60 * len(big)); alloc > limit {
		t.Fatalf("one %d-byte chunk of 8000 tool-call pieces allocated %d MB (> %d MB): quadratic in the pieces", len(big), alloc>>20, limit>>20)
	}
}
