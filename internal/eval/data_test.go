package eval

import (
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
)

func TestReadItems(t *testing.T) {
	in := `# comment
{"id": 1, "prompt": "hi", "prompt_label": "unsafe", "prompt_category": "Violent"}

{"id": "b", "system": "s", "prompt": "q", "response": "a b c", "prompt_label": "Safe", "response_label": "Controversial", "unsafe_text": "b c"}
{"message": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], "label": "Unsafe", "category": "PII", "unsafe_start_index": 3, "unsafe_end_index": 4}
{"messages": [{"role": "user", "content": "q"}], "label": "Safe"}
`
	items, err := ReadItems(strings.NewReader(in), "set.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 4 {
		t.Fatalf("%d items", len(items))
	}
	a, b, c, d := items[0], items[1], items[2], items[3]
	if a.Line != 2 || string(a.ID) != "1" || a.PromptLabel != Unsafe || a.PromptCategory != "Violent" || a.HasResponse() || a.HasSpan() {
		t.Errorf("item a: %+v", a)
	}
	if b.Line != 4 || len(b.Messages) != 3 || b.Messages[0].Role != "system" || b.ResponseLabel != Controversial || b.UnsafeText != "b c" || b.UnsafeStart != -1 || !b.HasSpan() {
		t.Errorf("item b: %+v", b)
	}
	if c.ResponseLabel != Unsafe || c.ResponseCategory != "PII" || c.PromptLabel != "" || c.UnsafeStart != 3 || c.UnsafeEnd != 4 {
		t.Errorf("item c: %+v", c)
	}
	if d.PromptLabel != Safe || d.ResponseLabel != "" {
		t.Errorf("item d: %+v", d)
	}
	if err := CheckCategories(items, "set.jsonl", config.QueryCategoryLabels, config.ResponseCategoryLabels); err != nil {
		t.Error(err)
	}
	if err := CheckCategories(items, "set.jsonl", config.QueryCategoryLabels, []string{"Violent"}); err == nil || !strings.Contains(err.Error(), `set.jsonl:5: response category "PII"`) {
		t.Errorf("CheckCategories: %v", err)
	}
}

func TestReadItemsErrors(t *testing.T) {
	cases := map[string]string{
		`{"prompt": "x"`: "invalid JSON",
		`{"prompt": "x", "prompt_label": "Safe"} {}`:                                                                                       "more than one",
		`{"prompt_label": "Safe"}`:                                                                                                         "no conversation",
		`{"prompt": "x"}`:                                                                                                                  "no label",
		`{"prompt": "x", "prompt_label": "Bad"}`:                                                                                           "want Safe, Unsafe or Controversial",
		`{"prompt": " ", "prompt_label": "Safe"}`:                                                                                          "empty",
		`{"response": "x", "response_label": "Safe"}`:                                                                                      "without \"prompt\"",
		`{"prompt": "x", "response_label": "Safe"}`:                                                                                        "does not end with an assistant",
		`{"prompt": "x", "messages": [], "label": "Safe"}`:                                                                                 "not both",
		`{"messages": [{"role": "bot", "content": "x"}], "label": "Safe"}`:                                                                 "unknown role",
		`{"messages": [{"role": "assistant", "content": "x"}], "label": "Safe"}`:                                                           "must end with a user turn",
		`{"messages": [{"role": "user", "content": "x"}], "message": [], "label": "Safe"}`:                                                 "not both",
		`{"prompt": "x", "prompt_label": "Safe", "prompt_category": "PII"}`:                                                                "needs an Unsafe",
		`{"prompt": "x", "response": "y", "label": "Unsafe", "response_label": "Unsafe"}`:                                                  "do not also give",
		`{"prompt": "x", "category": "PII"}`:                                                                                               "without \"label\"",
		`{"prompt": "x", "response": "y", "response_label": "Safe", "unsafe_text": "y"}`:                                                   "needs an Unsafe",
		`{"prompt": "x", "response": "y", "response_label": "Unsafe", "unsafe_text": "z"}`:                                                 "not a passage",
		`{"prompt": "x", "response": "y", "response_label": "Unsafe", "unsafe_start_index": 3}`:                                            "go together",
		`{"prompt": "x", "response": "y", "response_label": "Unsafe", "unsafe_start_index": 5, "unsafe_end_index": 4}`:                     "not a range",
		`{"prompt": "x", "response": "y", "response_label": "Unsafe", "unsafe_text": "y", "unsafe_start_index": 1, "unsafe_end_index": 1}`: "not both",
	}
	for line, want := range cases {
		_, err := ReadItems(strings.NewReader("\n"+line+"\n"), "d.jsonl")
		if err == nil || !strings.Contains(err.Error(), "d.jsonl:2: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  error %v, want d.jsonl:2 and %q", line, err, want)
		}
	}
	if _, err := ReadItems(strings.NewReader("# only a comment\n"), "e.jsonl"); err == nil || !strings.Contains(err.Error(), "no items") {
		t.Errorf("empty set: %v", err)
	}
}

func FuzzReadItems(f *testing.F) {
	f.Add([]byte(`{"id": 1, "prompt": "hi", "response": "yo", "prompt_label": "Unsafe", "response_label": "Unsafe", "unsafe_text": "yo"}`))
	f.Add([]byte(`{"message": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], "label": "Unsafe", "unsafe_start_index": 3, "unsafe_end_index": 4}`))
	f.Add([]byte("# c\n\n{\"prompt\": \"x\", \"label\": \"safe\"}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := ReadItems(strings.NewReader(string(b)), "f")
		if err != nil {
			return
		}
		for _, it := range items {
			if it.PromptLabel == "" && it.ResponseLabel == "" {
				t.Fatalf("item without labels: %+v", it)
			}
			if it.ResponseLabel != "" && !it.HasResponse() {
				t.Fatalf("response label without a response: %+v", it)
			}
			if (it.UnsafeStart < 0) != (it.UnsafeEnd < 0) || it.UnsafeEnd < it.UnsafeStart {
				t.Fatalf("bad span %+v", it)
			}
			if it.UnsafeText != "" && !strings.Contains(it.Messages[len(it.Messages)-1].Content, it.UnsafeText) {
				t.Fatalf("unsafe_text not in the response: %+v", it)
			}
		}
	})
}

// encoding/json matches keys case-insensitively and keeps the last repeated
// key: "Prompt" after "prompt" would be judged instead of the prompt that
// Python and jq (the official evaluation's readers) see. Refused, as
// moderate --jsonl refuses the same line.
func TestReadItemsRefusesCaseVariantKeys(t *testing.T) {
	for _, line := range []string{
		`{"prompt": "what a nice day", "Prompt": "how do I build a bomb", "prompt_label": "Safe"}`,
		`{"prompt": "x", "prompt_label": "Unsafe", "prompt_label": "Safe"}`,
	} {
		items, err := ReadItems(strings.NewReader(line+"\n"), "d.jsonl")
		if err == nil {
			t.Errorf("%s\n  accepted: judged %q as %s", line, lastUser(&items[0]), items[0].PromptLabel)
		}
	}
}

// A misspelt label field is refused: ignored, the response below would
// never be scored (the report would have no response task at all). Other
// unknown keys, a dataset's own columns, are ignored.
func TestReadItemsRefusesMisspeltLabelField(t *testing.T) {
	line := `{"prompt": "q", "response": "how to hurt someone", "prompt_label": "Safe", "respnse_label": "Unsafe"}`
	items, err := ReadItems(strings.NewReader(line+"\n"), "d.jsonl")
	if err == nil || !strings.Contains(err.Error(), `"respnse_label"`) {
		t.Errorf("accepted (response label %q, the response not evaluated), or another error: %v", items[0].ResponseLabel, err)
	}
	ok := `{"prompt": "q", "prompt_label": "Safe", "source": "forum", "lang": "en"}`
	if _, err := ReadItems(strings.NewReader(ok+"\n"), "d.jsonl"); err != nil {
		t.Errorf("a dataset's own columns refused: %v", err)
	}
}

// TestDatasetColumnsWithLabelInName: a dataset's own columns are ignored,
// those whose names hold "label" too: an Aegis 2.0 line (prompt_label_source,
// response_label_source), a WildGuardMix one (response_refusal_label). A
// check for any key holding "label" refused them.
func TestDatasetColumnsWithLabelInName(t *testing.T) {
	for _, line := range []string{
		`{"id":"a1","prompt":"hi","response":"hello","prompt_label":"Safe","response_label":"Safe","prompt_label_source":"human","response_label_source":"llm_jury","violated_categories":""}`,
		`{"prompt":"hi","response":"hello","prompt_label":"Safe","response_label":"Safe","response_refusal_label":"compliance","subcategory":"benign"}`,
		`{"prompt":"hi","prompt_label":"Safe","turn_index":3}`,
	} {
		if _, err := parseItem([]byte(line)); err != nil {
			t.Errorf("%s: %v", line, err)
		}
	}
}

// TestMisspeltLabelFieldsRefused: a key within two edits of a label field
// is refused: "response_lable" would leave the response unscored and
// "unsafe_txt" the item out of the detection bins, without a word.
func TestMisspeltLabelFieldsRefused(t *testing.T) {
	for _, line := range []string{
		`{"prompt":"hi","response":"hello","prompt_label":"Safe","response_lable":"Unsafe"}`,
		`{"prompt":"hi","response":"hello","response_label":"Unsafe","response_category":"Violent","unsafe_txt":"hello"}`,
	} {
		if _, err := parseItem([]byte(line)); err == nil {
			t.Errorf("%s: accepted, the misspelt field ignored", line)
		}
	}
}

// TestTransposedLabelFieldRefused: "catgeory" and "categroy" (a swapped
// pair, the commonest misspelling) are one edit from "category" when a swap
// counts as one: refused, not read with the category silently dropped (the
// gold Unsafe item scored as having no category).
func TestTransposedLabelFieldRefused(t *testing.T) {
	for _, k := range []string{"catgeory", "categroy", "lable"} {
		line := `{"prompt": "how do I hurt someone", "label": "Unsafe", "` + k + `": "Violent"}`
		if k == "lable" {
			line = `{"prompt": "hi", "response": "hello", "prompt_label": "Safe", "lable": "Unsafe"}`
		}
		if _, err := parseItem([]byte(line)); err == nil {
			t.Errorf("%q accepted and ignored: a misspelt label field", k)
		}
	}
}

// TestItemMessageMembersRefused: a message member eval does not read is
// refused: an answer made of tool calls was evaluated as the empty answer,
// its call judged nowhere.
func TestItemMessageMembersRefused(t *testing.T) {
	line := `{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}],"response_label":"Unsafe"}`
	if _, err := parseItem([]byte(line)); err == nil || !strings.Contains(err.Error(), `"tool_calls"`) {
		t.Errorf("parseItem: %v, want the member refused", err)
	}
}
