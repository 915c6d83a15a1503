package guard

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestStreamedToolCallMatchesTemplate: an answer of text and a tool call,
// streamed with AppendText and StartToolCall/EndToolCall as the template
// lays it out (the caller writing the "\n" before the call and the text
// inside it), is judged as the same ids and verdicts as the whole
// conversation (Moderate with the call in ToolCalls), the call's tags as
// the model's tokens for them.
func TestStreamedToolCallMatchesTemplate(t *testing.T) {
	m := tinyModel(t, "toolcall", nil)
	ctx := context.Background()
	call := ToolCall{Name: "get_weather", Arguments: `{"city": "Paris"}`}
	whole, err := m.Moderate(ctx, []Message{userMsg[0], {Role: "assistant", Content: "Sure.", ToolCalls: []ToolCall{call}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	var got []TokenVerdict
	add := func(tvs []TokenVerdict, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tvs...)
	}
	add(s.AppendText(ctx, "Sure."))
	add(s.AppendText(ctx, "\n"))
	add(s.StartToolCall(ctx))
	add(s.AppendText(ctx, tokenizer.ToolCallBody(tokenizer.ToolCall(call))))
	add(s.EndToolCall(ctx))
	add(s.EndResponse(ctx))
	ids := func(tvs []TokenVerdict) []int {
		out := make([]int, len(tvs))
		for i, tv := range tvs {
			out[i] = tv.ID
		}
		return out
	}
	if !slices.Equal(ids(got), ids(whole.Tokens)) {
		t.Fatalf("streamed ids %v\nwhole ids    %v", ids(got), ids(whole.Tokens))
	}
	if !slices.Contains(ids(got), tokenizer.ToolCallStart) || !slices.Contains(ids(got), tokenizer.ToolCallEnd) {
		t.Errorf("no tool call tags among the judged ids %v", ids(got))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i].Verdict, whole.Tokens[i].Verdict) {
			t.Errorf("token %d: streamed %+v, whole %+v", i, got[i].Verdict, whole.Tokens[i].Verdict)
		}
	}
	// In the think block a call is refused: the template writes calls
	// after the reasoning.
	s2 := m.NewStream()
	defer s2.Close()
	if _, err := s2.JudgePrompt(ctx, userMsg); err != nil {
		t.Fatal(err)
	}
	if err := s2.StartResponse(true); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.StartToolCall(ctx); err == nil {
		t.Error("StartToolCall inside the think block accepted")
	}
}
