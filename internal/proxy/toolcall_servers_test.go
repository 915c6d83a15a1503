package proxy

import (
	"bytes"
	"testing"
)

// TestToolCallNameInEveryChunk: Fireworks (Kimi), MiniMax on NVIDIA NIM
// and other servers send the whole function name in every tool-call chunk,
// the first one with empty arguments as OpenAI's first chunk has: the
// repeats are the name again, before the arguments as after, and the
// stream is relayed byte for byte.
func TestToolCallNameInEveryChunk(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
		`{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"read_file","arguments":""}}]}`,
		`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{\"path\": "}}]}`,
		`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"read_file","arguments":"\"notes.txt\"}"}}]}`,
	)})
	for _, mode := range []Mode{HoldBack, PassThrough} {
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) || audit["event"] != EventAllowed {
			t.Errorf("mode %v: a tool call whose name comes in every chunk: status %d, audit %v, body\n%s", mode, resp.StatusCode, audit, body)
		}
	}
}

// TestToolCallWholeMessageByPosition: in a whole (non-streamed) message the
// tool calls are an array that clients read by position; an "index" on
// them means nothing to the OpenAI SDKs. Ollama writes "index" on every
// call of a whole message, 0 for every call on its legacy tool parser:
// two calls, both "index": 0, are two calls.
func TestToolCallWholeMessageByPosition(t *testing.T) {
	m := tinyModel(t)
	whole := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"qwen2.5-coder:7b","system_fingerprint":"fp_ollama","choices":[{"index":0,"finish_reason":"tool_calls",` +
		`"message":{"role":"assistant","content":"","tool_calls":[` +
		`{"id":"call_a","index":0,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},` +
		`{"id":"call_b","index":0,"type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"Europe/Paris\"}"}}]}}]}`)
	up := newFakeUpstream(t, upstreamSpec{Whole: whole})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
	resp, body := rawPost(t, p.URL, "Hello", false, nil)
	if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, whole) || audit["event"] != EventAllowed {
		t.Errorf("a whole message with two calls (Ollama writes index 0 on both): status %d, audit %v, body %s", resp.StatusCode, audit, body)
	}
}

// TestToolCallSameIndexRefused: some servers (Ollama 0.20–0.23 on its
// legacy tool parser) stream parallel calls each whole in its own chunk,
// every one "index": 0 with its own id. Clients disagree on what that is
// (openai-python merges the calls, names and arguments concatenated;
// openai-node keeps the last name; others split them by id), so no
// reading of the guard's is the client's: the stream is refused
// (upstream_bad_response), as documented.
func TestToolCallSameIndexRefused(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
		`{"role":"assistant","content":"","tool_calls":[{"id":"call_a","index":0,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}`,
		`{"role":"assistant","content":"","tool_calls":[{"id":"call_b","index":0,"type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"Europe/Paris\"}"}}]}`,
	)})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	_, body := rawPost(t, p.URL, "Hello", true, nil)
	if audit := p.lastRecord(t); audit["event"] != EventUpstreamError || !bytes.Contains(body, []byte(`"code":"upstream_bad_response"`)) {
		t.Errorf("parallel calls, index 0 each: audit %v, body\n%s", audit, body)
	}
}

// TestToolCallWholeObjectArguments: TGI and llama.cpp's server (its
// --tool-args-object form) answer a whole message with "arguments" as a
// JSON object; a whole message is not merged piece by piece, so it is
// judged as the template writes the object (chatmsg.ToJSON) and relayed.
func TestToolCallWholeObjectArguments(t *testing.T) {
	m := tinyModel(t)
	whole := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"tgi","choices":[{"index":0,"finish_reason":"tool_calls",` +
		`"message":{"role":"assistant","content":null,"tool_calls":[{"id":"0","type":"function","function":{"name":"retrieve_payment_status","arguments":{"transaction_id":"T1001"}}}]}}]}`)
	up := newFakeUpstream(t, upstreamSpec{Whole: whole})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
	resp, body := rawPost(t, p.URL, "Hello", false, nil)
	if audit := p.lastRecord(t); resp.StatusCode != 200 || audit["event"] != EventAllowed {
		t.Errorf("a whole message whose arguments are an object: status %d, audit %v, body %s", resp.StatusCode, audit, body)
	}
}

// TestToolCallStringArgumentsEscaped: the agent runs json.loads(arguments)
// and gets "EVIL" from "\u0045\u0056\u0049\u004c": the guard judges the
// arguments with their \u escapes decoded, streamed or whole (servers
// whose tool parsers write non-ASCII with ensure_ascii=True send every
// such character so, and a model steered to write escapes could spell
// anything).
func TestToolCallStringArgumentsEscaped(t *testing.T) {
	m := tinyModel(t)
	t.Run("stream", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
			`{"role":"assistant","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":""}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"{\"text\": \"\\u0045\\u0056\\u0049\\u004c\"}"}}]}`,
		)})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
		_, body := rawPost(t, p.URL, "Hello", true, nil)
		if audit := p.lastRecord(t); audit["event"] == EventAllowed {
			t.Errorf("the agent's json.loads(arguments) is {\"text\": \"EVIL\"}; the guard allowed it:\n%s", body)
		}
	})
	t.Run("whole", func(t *testing.T) {
		whole := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"tool_calls",` +
			`"message":{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"write","arguments":"{\"text\": \"\\u0045\\u0056\\u0049\\u004c\"}"}}]}}]}`)
		up := newFakeUpstream(t, upstreamSpec{Whole: whole})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
		_, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); audit["event"] == EventAllowed {
			t.Errorf("the agent's json.loads(arguments) is {\"text\": \"EVIL\"}; the guard allowed it:\n%s", body)
		}
	})
}
