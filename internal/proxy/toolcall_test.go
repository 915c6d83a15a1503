package proxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// feedDeltas feeds deltas (JSON objects) as a stream's chunks and returns
// the text the guard reads, or why the feeder refused them.
func feedDeltas(t *testing.T, deltas ...string) (string, error) {
	t.Helper()
	f := newFeeder()
	for _, d := range deltas {
		data := []byte(`{"choices":[{"index":0,"delta":` + d + `}]}`)
		p := parseEvent(sseEvent{raw: sseData(string(data)), data: data})
		if p.bad != nil || !p.hasText {
			t.Fatalf("delta %s: %v", d, p.bad)
		}
		ev := &eventText{}
		if err := feedFields(f, ev, &p.text); err != nil {
			return "", err
		}
		f.end(ev)
	}
	f.finish()
	return string(f.fed), nil
}

// TestToolCallLayout: an answer's tool calls, however a server splits
// them into chunks, are read as the Qwen3 template writes the whole
// message's calls after its content — the text chatmsg.ToolCalls writes
// for the same calls on the request side.
func TestToolCallLayout(t *testing.T) {
	const weather = `[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},` +
		`{"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]`
	whole, err := chatmsg.ToolCallsText(json.RawMessage(weather), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		deltas []string
		want   string
	}{
		{"OpenAI's chunks", []string{
			`{"role":"assistant","content":"Sure."}`,
			`{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"get_weather","arguments":""}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}`,
			`{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]}`,
		}, chatmsg.Join("Sure.", whole)},
		{"whole calls in one chunk, no content", []string{
			`{"role":"assistant","content":null,"tool_calls":` + strings.Replace(strings.Replace(weather, `{"id":"c1"`, `{"index":0,"id":"c1"`, 1), `{"id":"c2"`, `{"index":1,"id":"c2"`, 1) + `}`,
		}, whole},
		{"the name in every chunk", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"get_weather","arguments":"{\"city\": "}}]}`,
			`{"tool_calls":[{"index":0,"function":{"name":"get_weather","arguments":"\"Paris\"}"}}]}`,
			`{"tool_calls":[{"index":1,"function":{"name":"f","arguments":"{}"}}]}`,
		}, whole},
		{"a name in pieces", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"get_"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"name":"weather"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Paris\"}"}}]}`,
			`{"tool_calls":[{"index":1,"function":{"name":"f","arguments":"{}"}}]}`,
		}, whole},
		{"after reasoning", []string{
			`{"reasoning_content":"\nLook it up.\n"}`,
			`{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}`,
		}, "Look it up." + closeThink + callOpen + "f" + callArgs + "{}" + callClose},
		{"content of newlines only", []string{
			`{"content":"\n\n"}`,
			`{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}`,
		}, "\n" + callOpen + "f" + callArgs + "{}" + callClose},
		{"legacy function_call", []string{
			`{"function_call":{"name":"f","arguments":""}}`,
			`{"function_call":{"arguments":"{}"}}`,
		}, callOpen + "f" + callArgs + "{}" + callClose},
		{"a custom tool", []string{
			`{"tool_calls":[{"index":0,"type":"custom","custom":{"name":"sh","input":"ls -l"}}]}`,
		}, callOpen + "sh" + callArgs + "ls -l" + callClose},
		{"a call without arguments", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"f"}}]}`,
		}, callOpen + "f" + callArgs + callClose},
		{"content after a call", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"a","arguments":"1"}}]}`,
			`{"content":"Done."}`,
		}, callOpen + "a" + callArgs + "1" + callClose + "Done."},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, err := feedDeltas(t, c.deltas...); err != nil || got != c.want {
				t.Errorf("read\n%q (%v)\nwant\n%q", got, err, c.want)
			}
		})
	}
}

// TestToolCallPiecesRefused: pieces a client would assemble otherwise than
// the guard reads them are refused (clients merge a call's pieces by
// index, strings concatenated; openai-python puts an index that does not
// exist yet at the end of its list and reads -1 as the last call, and
// merges object arguments key by key): "EV" ... "IL" would be "EVIL" in
// the client and two pieces apart in the guard.
func TestToolCallPiecesRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		deltas []string
		err    string
	}{
		{"resumed after another call", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"tool_calls":[{"index":1,"function":{"name":"noop","arguments":"{}"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"IL\"}"}}]}`,
		}, "tool call 0 where call 2 comes next"},
		{"resumed after text", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"content":"ok"}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"IL\"}"}}]}`,
		}, "tool call 0 where call 1 comes next"},
		{"index 1 first", []string{
			`{"tool_calls":[{"index":1,"function":{"name":"write","arguments":"{}"}}]}`,
		}, "tool call 1 where call 0 comes next"},
		{"index -1", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"tool_calls":[{"index":-1,"function":{"arguments":"IL\"}"}}]}`,
		}, "tool call -1 where call 1 comes next"},
		{"function_call resumed", []string{
			`{"function_call":{"name":"write","arguments":"{\"text\": \"EV"}}`,
			`{"content":"ok"}`,
			`{"function_call":{"arguments":"IL\"}"}}`,
		}, "function_call that resumes"},
		{"a name changed after the arguments", []string{
			`{"tool_calls":[{"index":0,"function":{"name":"EV","arguments":"{}"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"name":"IL"}}]}`,
		}, "a name after its arguments"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, err := feedDeltas(t, c.deltas...); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("read %q, %v; want an error with %q", got, err, c.err)
			}
		})
	}
	// Arguments as an object are refused as the event is read.
	data := []byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"w","arguments":{"t":"EV"}}}]}}]}`)
	if p := parseEvent(sseEvent{raw: sseData(string(data)), data: data}); p.bad == nil || !strings.Contains(p.bad.Error(), `"arguments"`) {
		t.Errorf("object arguments: %v", p.bad)
	}
	data = []byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"w","arguments":1}}]}}]}`)
	if p := parseEvent(sseEvent{raw: sseData(string(data)), data: data}); p.bad == nil || !strings.Contains(p.bad.Error(), "not a string") {
		t.Errorf("number arguments: %v", p.bad)
	}
}

// toolCallStream is an answer that says a few words and calls a tool
// whose arguments, in pieces, end with payload.
func toolCallStream(payload string) [][]byte {
	return [][]byte{
		chunkEvent(`[{"index":0,"delta":{"role":"assistant","content":"Sure, I will write it down."},"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"write_file","arguments":""}}]},"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\": \"notes/today.txt\", "}}]},"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"text\": \"a few ordinary words about the weather, the garden and "}}]},"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"the week ahead, then ` + payload + `\"}"}}]},"finish_reason":null}]`),
		chunkEvent(`[{"index":0,"delta":{},"finish_reason":"tool_calls"}]`),
		sseData("[DONE]"),
	}
}

// TestToolCallsJudged: the tool calls of an answer are judged as the
// assistant's turn. A safe call is relayed byte for byte; a flagged one
// is cut, and in hold-back no part of it reaches the client (a call goes
// out only once all of it was judged), while the words before it do.
func TestToolCallsJudged(t *testing.T) {
	m := tinyModel(t)
	const words = "Sure, I will write it down."
	judgedCall := callOpen + "write_file" + callArgs +
		`{"path": "notes/today.txt", "text": "a few ordinary words about the weather, the garden and the week ahead, then fine"}` + callClose
	for _, mode := range []Mode{HoldBack, PassThrough} {
		t.Run("safe/"+mode.String(), func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Events: toolCallStream("fine")})
			rec := &recorder{Moderator: Direct(m)}
			p := newTestProxy(t, up.URL, markModerator{rec}, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			resp, body := rawPost(t, p.URL, "Hello", true, nil)
			if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) || audit["event"] != EventAllowed {
				t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
			}
			if want := words + "\n" + judgedCall; rec.text() != want {
				t.Errorf("judged\n%q\nwant\n%q", rec.text(), want)
			}
		})
		t.Run("flagged/"+mode.String(), func(t *testing.T) {
			// Paced as a model generates: each piece is judged before the
			// next comes, so a call's first pieces would go out if only its
			// text and look-ahead held it.
			up := newFakeUpstream(t, upstreamSpec{Events: toolCallStream("EVIL"), Pace: 20 * time.Millisecond})
			p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: mode}, nil)
			resp, body := rawPost(t, p.URL, "Hello", true, nil)
			audit := p.lastRecord(t)
			if resp.StatusCode != 200 || audit["event"] != EventResponseFlagged ||
				!strings.Contains(string(body), `"finish_reason":"content_filter"`) || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
				t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
			}
			if mode == HoldBack {
				if strings.Contains(string(body), "tool_calls") || strings.Contains(string(body), "EVIL") {
					t.Errorf("a part of the flagged call reached the client: %s", body)
				}
				if !strings.Contains(string(body), words) {
					t.Errorf("the words before the call were held: %s", body)
				}
			}
		})
	}
	whole := func(payload string) []byte {
		return []byte(`{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` + words + `",` +
			`"tool_calls":[{"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{\"text\": \"` + payload + `\"}"}}]},"finish_reason":"tool_calls"}]}`)
	}
	t.Run("whole/safe", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Whole: whole("fine")})
		rec := &recorder{Moderator: Direct(m)}
		p := newTestProxy(t, up.URL, markModerator{rec}, Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, whole("fine")) || audit["event"] != EventAllowed {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
		}
		if want := words + "\n" + callOpen + "write_file" + callArgs + `{"text": "fine"}` + callClose; rec.text() != want {
			t.Errorf("judged %q, want %q", rec.text(), want)
		}
	})
	t.Run("whole/flagged", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Whole: whole("EVIL")})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 400 || apiErrorOf(t, body).Code != finishContentFilter || audit["event"] != EventResponseFlagged {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
		}
		if strings.Contains(string(body), "EVIL") {
			t.Errorf("the flagged call reached the client: %s", body)
		}
	})
}

// FuzzFeeder feeds a stream of pieces of every kind (reasoning, content,
// refusal, tool calls of a few keys) and checks the feeder's bookkeeping:
// each judged piece is where it says in the text fed, no event ends past
// that text, and once the turn is finished nothing is held (every tool
// call closed, every held newline decided).
func FuzzFeeder(f *testing.F) {
	// Parts split at '|': a kind byte (low 3 bits; 0x80 starts a new
	// event), then its text.
	f.Add([]byte("\x01\nthink\n|\x80hi|\x83get|\x03_weather|\x84{\"x\"|\x04: 1}|\x055|\x051|\x83g|\x84[1]|\x80done"))
	f.Add([]byte("\x05|\x83f|\x84{}|\x82no|\x06|\x050|\x83h|\x87"))
	f.Add([]byte("\x83w|\xc4{\"t\": \"\\u00|\x4445\\ud83d|\xc4\\ude00\\\\u0041\"}|\x051|\x83g|\x44\\u00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fd := newFeeder()
		var evs []*eventText
		var ev *eventText
		key := "0"
		for _, part := range bytes.Split(data, []byte{'|'}) {
			if len(part) == 0 {
				continue
			}
			if ev == nil || part[0]&0x80 != 0 {
				if ev != nil {
					fd.end(ev)
				}
				ev = &eventText{}
				evs = append(evs, ev)
			}
			text := string(part[1:])
			switch part[0] & 7 {
			case 0:
				fd.addContent(ev, text)
			case 1:
				fd.addReasoning(ev, text)
			case 2:
				fd.addRefusal(ev, text)
			case 5:
				// The next pieces' call: a number, or the legacy
				// function_call.
				key = functionCallKey
				if len(text) > 0 {
					key = strconv.Itoa(int(text[0] % 4))
				}
				continue
			}
			var err error
			switch part[0] & 7 {
			case 3:
				err = fd.toolCall(ev, callPiece{key: key, name: text})
			case 4:
				// 0x40: JSON arguments, their escapes decoded.
				err = fd.toolCall(ev, callPiece{key: key, args: text, json: part[0]&0x40 != 0})
			case 6, 7:
				err = fd.toolCall(ev, callPiece{key: key})
			}
			if err != nil {
				// The relay ends the stream here.
				return
			}
		}
		if ev != nil {
			fd.end(ev)
		}
		fd.finish()
		for i, e := range evs {
			if e.pending != 0 {
				t.Fatalf("event %d: %d pieces still held after the finish", i, e.pending)
			}
			if e.fedEnd > len(fd.fed) {
				t.Fatalf("event %d ends at %d, past the %d bytes fed", i, e.fedEnd, len(fd.fed))
			}
			for _, p := range e.pieces {
				if p.state == pieceFed && (p.start+len(p.text) > e.fedEnd || string(fd.fed[p.start:p.start+len(p.text)]) != p.text) {
					t.Fatalf("event %d: piece %q is not at %d (event ends at %d) in %q", i, p.text, p.start, e.fedEnd, fd.fed)
				}
			}
		}
	})
}

// A tool call's text as fed (its tags spelled, as their tokens decode).
const (
	callOpen  = tokenizer.ToolCallTag + tokenizer.ToolCallName
	callArgs  = tokenizer.ToolCallArguments
	callClose = tokenizer.ToolCallClosing + tokenizer.ToolCallEndTag
)
