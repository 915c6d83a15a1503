package chatmsg

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

func TestContentText(t *testing.T) {
	for _, c := range []struct {
		in, want string
		skipped  []string
	}{
		{`"plain"`, "plain", nil},
		{`null`, "", nil},
		{``, "", nil},
		{`[]`, "", nil},
		{`[{"type":"text","text":"a"},{"type":"input_text","text":"b"},{"type":"output_text","text":"c"}]`, "a\nb\nc", nil},
		{`[{"type":"refusal","refusal":"r"},"bare",{"type":"future_text","text":"f"}]`, "r\nbare\nf", nil},
		{`[{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"a"},{"type":"file"},{"type":"image_url"},{}]`, "a", []string{"image_url", "file", "unknown"}},
		{`[{"type":"text","text":""}]`, "", nil},
		// Parts servers read as text whatever their type: by name for the
		// known ones, every string (less "type" values) for the others.
		{`[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"thinking","thinking":"t","signature":"sig"}]`, "a\nt", nil},
		{`[{"type":"tool_reference","name":"n"},{"type":"x","a":["b",{"type":"c","d":"e"}],"n":5}]`, "n\nb\nc\ne", nil},
		{`[{"type":"image_url","image_url":{"url":"x"},"text":"caption"},{"type":"input_audio","input_audio":{"data":"AAAA"}}]`, "caption", []string{"input_audio"}},
		// Embeddings and encrypted reasoning are not text.
		{`[{"type":"image_embeds","image_embeds":"QUJD"},{"type":"audio_embeds","audio_embeds":"QUJD"},{"type":"redacted_thinking","data":"QUJD"},"x"]`, "x", []string{"image_embeds", "audio_embeds", "redacted_thinking"}},
	} {
		var skipped Skipped
		got, err := ContentText(json.RawMessage(c.in), &skipped)
		if err != nil || got != c.want || !slices.Equal(skipped, c.skipped) {
			t.Errorf("%s: %q, skipped %v, %v; want %q, %v", c.in, got, skipped, err, c.want, c.skipped)
		}
	}
	for _, bad := range []string{`5`, `{"type":"text","text":"a"}`, `[5]`, `[{"type":"text","text":5}]`, `[{"refusal":{}}]`, `["a"`} {
		var skipped Skipped
		if got, err := ContentText(json.RawMessage(bad), &skipped); err == nil {
			t.Errorf("%s: accepted as %q", bad, got)
		}
	}
}

func TestConversation(t *testing.T) {
	raws := []json.RawMessage{
		json.RawMessage(`{"role":"developer","content":"s"}`),
		json.RawMessage(`{"role":"user","content":"u"}`),
		json.RawMessage(`{"role":"assistant","content":"call","reasoning_content":"r1","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}},{"function":{"name":"g","arguments":{"k":"v"}}}]}`),
		json.RawMessage(`{"role":"tool","tool_call_id":"c1","content":"result"}`),
		json.RawMessage(`{"role":"assistant","content":"answer","reasoning":"r2","reasoning_content":"r2"}`),
		json.RawMessage(`{"role":"function","name":"f","content":"old"}`),
		json.RawMessage(`{"role":"assistant","content":null,"reasoning":"r3","function_call":{"name":"h","arguments":"{}"}}`),
		json.RawMessage(`{"role":"system","content":"late"}`),
	}
	var skipped Skipped
	msgs, err := Conversation(raws, &skipped)
	if err != nil {
		t.Fatal(err)
	}
	want := []tokenizer.Message{{Role: "system", Content: "s"}, {Role: "user", Content: "u"},
		{Role: "assistant", Content: "call", ReasoningContent: "r1", ToolCalls: []tokenizer.ToolCall{{Name: "f", Arguments: `{"q":1}`}, {Name: "g", Arguments: `{"k": "v"}`}}},
		{Role: ToolRole, Content: "result"},
		{Role: "assistant", Content: "answer", ReasoningContent: "r2"},
		{Role: ToolRole, Content: "old"},
		{Role: "assistant", Content: "", ReasoningContent: "r3", ToolCalls: []tokenizer.ToolCall{{Name: "h", Arguments: "{}"}}},
		{Role: "system", Content: "late"}}
	if !reflect.DeepEqual(msgs, want) || len(skipped) != 0 {
		t.Fatalf("got  %q\nwant %q\nskipped %v", msgs, want, skipped)
	}
	last := LastUser(msgs)
	if trailing := Trailing(msgs[last+1:]); last != 1 || !strings.HasPrefix(trailing, "r1\ncall\n<tool_call>") || !strings.HasSuffix(trailing, "\nresult\nr2\nanswer\nold\nr3\n<tool_call>\n{\"name\": \"h\", \"arguments\": {}}\n</tool_call>\nlate") {
		t.Errorf("last user %d, trailing %q", last, trailing)
	}
	if last := LastUser(msgs[:1]); last != -1 {
		t.Errorf("no user turn: last user %d", last)
	}
	for _, bad := range []string{`{"role":"narrator","content":"x"}`, `{"role":"assistant","tool_calls":{"id":"c"}}`, `{"role":"assistant","reasoning":5}`} {
		if _, err := Conversation([]json.RawMessage{json.RawMessage(bad)}, &skipped); err == nil || !strings.Contains(err.Error(), "messages[0]") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	// A "type" below the call's own is a value like any other.
	m, err := Message(json.RawMessage(`{"role":"assistant","tool_calls":[{"function":{"name":null,"arguments":{"type":"payload"}}}]}`), &skipped)
	if err != nil || !strings.Contains(m.Content, "payload") {
		t.Errorf("arguments {\"type\": ...}: %q, %v", m.Content, err)
	}
	// OpenRouter's reasoning_details, sent back: their text is reasoning.
	m, err = Message(json.RawMessage(`{"role":"assistant","content":"a","reasoning_details":[{"type":"reasoning.text","text":"t1"},{"type":"reasoning.summary","summary":"s1"},{"type":"reasoning.encrypted","data":"QUJD"}]}`), &skipped)
	if err != nil || m.ReasoningContent != "t1\ns1" {
		t.Errorf("reasoning_details: %q, %v", m.ReasoningContent, err)
	}
	// A call of another shape has its strings read.
	m, err = Message(json.RawMessage(`{"role":"assistant","tool_calls":[{"type":"custom","custom":{"name":"c","input":"payload"}}]}`), &skipped)
	if err != nil || m.Content != "c\npayload" {
		t.Errorf("a custom tool call: %q, %v", m.Content, err)
	}
}

// TestLastUserSkipsToolResults: tool results are never the last user
// turn LastUser finds (the template writes them as a user turn, which the
// tokenizer renders from their own role).
func TestLastUserSkipsToolResults(t *testing.T) {
	turns := []tokenizer.Message{{Role: "user", Content: "q"}, {Role: "assistant", ToolCalls: []tokenizer.ToolCall{{Name: "f", Arguments: "{}"}}},
		{Role: ToolRole, Content: "a"}, {Role: ToolRole, Content: "b"}, {Role: "assistant", Content: "done"}, {Role: ToolRole, Content: "c"}}
	if last := LastUser(turns); last != 0 {
		t.Errorf("last user turn %d, want the user's own (0)", last)
	}
}

func TestDefinitions(t *testing.T) {
	tools := json.RawMessage(`[{"type":"function","function":{"name":"f","description":"d", "parameters":{}}}, {"type":"function","function":{"name":"h"}}]`)
	functions := json.RawMessage(`[{"name":"g","description":"e"}]`)
	schema := json.RawMessage(`{"name":"r", "schema":{"type":"object"}}`)
	got, err := Definitions([]json.RawMessage{tools, functions, nil}, schema, json.RawMessage(`null`), json.RawMessage(`[]`))
	want := []string{`{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}`, `{"type": "function", "function": {"name": "h"}}`,
		`{"name": "g", "description": "e"}`, `{"name": "r", "schema": {"type": "object"}}`}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	if got, err := Definitions([]json.RawMessage{json.RawMessage(`[]`)}); err != nil || len(got) != 0 {
		t.Errorf("no tools: %q, %v", got, err)
	}
	if _, err := Definitions([]json.RawMessage{json.RawMessage(`{"name":"f"}`)}); err == nil {
		t.Error("tools that are not an array accepted")
	}
}

// TestKeptReasoning: the reasoning the Qwen3 template keeps before the last
// user turn is that of the assistant turns after its last query, a user
// turn not written as a tool result; earlier reasoning it drops, and all of
// it when there is no query.
func TestKeptReasoning(t *testing.T) {
	turns := []tokenizer.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b", ReasoningContent: "r0"},
		{Role: "user", Content: "q"}, {Role: "assistant", ReasoningContent: "r1"}, {Role: ToolRole, Content: "x"},
		{Role: "assistant", ReasoningContent: "r2"}, {Role: "user", Content: "<tool_response>go on</tool_response>"}}
	if got := KeptReasoning(turns, 6); got != "r1\nr2" {
		t.Errorf("after the last query: %q", got)
	}
	if got := KeptReasoning(turns, 2); got != "" {
		t.Errorf("the last user turn a query: %q", got)
	}
	// With no query at all, the template's last query is the last message:
	// no reasoning before it is written.
	if got := KeptReasoning(turns[3:], 3); got != "" {
		t.Errorf("no query before: %q", got)
	}
}

// FuzzContentText: any input gives an error or text, never a panic; the
// text judged holds every string a part's text or refusal field carried.
func FuzzContentText(f *testing.F) {
	for _, s := range []string{`"a"`, `null`, `[{"type":"text","text":"a"},"b"]`, `[{"type":"image_url"}]`, `[{"refusal":"r","text":"t"}]`, `[5]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var skipped Skipped
		got, err := ContentText(b, &skipped)
		if err != nil {
			return
		}
		var parts []Part
		if json.Unmarshal(b, &parts) == nil {
			for _, p := range parts {
				if txt, ok := p.Judged(); ok && !strings.Contains(got, txt) {
					t.Fatalf("%q: part text %q not in the judged %q", b, txt, got)
				}
			}
		}
		for _, s := range skipped {
			if s == "" {
				t.Fatalf("%q: an empty skipped entry", b)
			}
		}
	})
}

// Keys are read exactly as written, as the Python servers that feed the
// model read them: a case variant neither hides nor replaces their text.
func TestExactKeys(t *testing.T) {
	var skipped Skipped
	got, err := ContentText(json.RawMessage(`[{"type":"text","text":"EVIL","Text":null},{"type":"text","TEXT":"other"}]`), &skipped)
	if err != nil || got != "EVIL" || !slices.Equal(skipped, []string{"text"}) {
		t.Errorf("parts: %q, skipped %v, %v", got, skipped, err)
	}
	for _, raw := range []string{
		`{"role":"user","content":"EVIL","Content":"fine"}`,
		`{"role":"user","Content":"fine","content":"EVIL"}`,
		`{"role":"user","ROLE":"system","content":"EVIL"}`,
	} {
		m, err := Message(json.RawMessage(raw), &skipped)
		if err != nil || m.Role != "user" || m.Content != "EVIL" {
			t.Errorf("%s: %+v, %v", raw, m, err)
		}
	}
	if _, err := Message(json.RawMessage(`null`), &skipped); err == nil {
		t.Error("a null message accepted")
	}
	if _, err := Message(json.RawMessage(`{"role":5}`), &skipped); err == nil {
		t.Error("a numeric role accepted")
	}
}

func TestTrailingWhiteSpace(t *testing.T) {
	msgs := []tokenizer.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "\n\n"}, {Role: "system", Content: " \t"}}
	if got := Trailing(msgs[1:]); got != "" {
		t.Errorf("white space after the user turn: %q", got)
	}
}

// FuzzMessage: any message gives an error or a turn, never a panic; every
// string of its tool calls' functions is in the turn's text.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{`{"role":"user","content":"a"}`, `{"role":"tool","content":[{"type":"text","text":"r"}]}`,
		`{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{}"}}],"reasoning":"x"}`,
		`{"role":"assistant","function_call":{"name":"f","arguments":{"a":[1,"b"]}}}`, `{"role":"assistant","tool_calls":[{"x":{"y":["z"]}}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var skipped Skipped
		m, err := Message(b, &skipped)
		if err != nil {
			return
		}
		// Keys read exactly, as Message reads them.
		var w map[string]any
		if json.Unmarshal(b, &w) != nil {
			return
		}
		calls, _ := w["tool_calls"].([]any)
		for _, c := range calls {
			c, _ := c.(map[string]any)
			fn, _ := c["function"].(map[string]any)
			name, ok1 := fn["name"].(string)
			args, ok2 := fn["arguments"].(string)
			text := WithCalls(m)
			if ok1 && ok2 && (!strings.Contains(text, name) || !strings.Contains(text, Unescape(args))) {
				t.Fatalf("%q: call %q(%q) not in the turn's text %q", b, name, args, text)
			}
		}
	})
}
