package chatmsg

import (
	"encoding/json"
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
		json.RawMessage(`{"role":"assistant","content":"call","reasoning_content":"r1"}`),
		json.RawMessage(`{"role":"tool","content":"result"}`),
		json.RawMessage(`{"role":"assistant","content":"answer","reasoning_content":"r2"}`),
		json.RawMessage(`{"role":"function","content":"old"}`),
		json.RawMessage(`{"role":"system","content":"late"}`),
	}
	var skipped Skipped
	msgs, err := Conversation(raws, &skipped)
	if err != nil {
		t.Fatal(err)
	}
	want := []tokenizer.Message{{Role: "system", Content: "s"}, {Role: "user", Content: "u"},
		{Role: "assistant", Content: "call\nanswer", ReasoningContent: "r1\nr2"}, {Role: "system", Content: "late"}}
	if !slices.Equal(msgs, want) || !slices.Equal(skipped, []string{"tool", "function"}) {
		t.Fatalf("%+v, skipped %v", msgs, skipped)
	}
	last := LastUser(msgs)
	if trailing := Trailing(msgs[last+1:]); last != 1 || trailing != "r1\nr2\ncall\nanswer\nlate" {
		t.Errorf("last user %d, trailing %q", last, trailing)
	}
	if last := LastUser(msgs[:1]); last != -1 {
		t.Errorf("no user turn: last user %d", last)
	}
	if _, err := Conversation([]json.RawMessage{json.RawMessage(`{"role":"narrator","content":"x"}`)}, &skipped); err == nil || !strings.Contains(err.Error(), "messages[0]") {
		t.Errorf("unknown role: %v", err)
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
		m, ok, err := Message(json.RawMessage(raw), &skipped)
		if err != nil || !ok || m.Role != "user" || m.Content != "EVIL" {
			t.Errorf("%s: %+v, %v, %v", raw, m, ok, err)
		}
	}
	if _, _, err := Message(json.RawMessage(`null`), &skipped); err == nil {
		t.Error("a null message accepted")
	}
	if _, _, err := Message(json.RawMessage(`{"role":5}`), &skipped); err == nil {
		t.Error("a numeric role accepted")
	}
}

func TestTrailingWhiteSpace(t *testing.T) {
	msgs := []tokenizer.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "\n\n"}, {Role: "system", Content: " \t"}}
	if got := Trailing(msgs[1:]); got != "" {
		t.Errorf("white space after the user turn: %q", got)
	}
}
