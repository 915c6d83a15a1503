package proxy

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// renderedTurn is the assistant turn as the chat template renders it after
// "<|im_start|>assistant\n" and before "<|im_end|>", split into the part
// the guard's StartResponse writes and the text fed after it.
func renderedTurn(t *testing.T, msg guard.Message) (thinking bool, fed string) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	chat, err := tok.RenderChat(guardhook.ChatMessages([]guard.Message{{Role: "user", Content: "hi"}, msg}))
	if err != nil {
		t.Fatal(err)
	}
	_, turn, _ := strings.Cut(chat.Text, "<|im_start|>assistant\n")
	turn = strings.TrimSuffix(turn, "<|im_end|>\n")
	if rest, ok := strings.CutPrefix(turn, "<think>\n\n</think>\n\n"); ok {
		return false, rest
	}
	return true, strings.TrimPrefix(turn, "<think>\n")
}

type fieldDelta struct {
	reasoning bool
	text      string
}

// TestFeederRendersTheTemplate feeds assistant turns in random chunkings
// and checks that what reaches the guard is the chat template's rendering
// of the whole turn, and that every upstream byte is accounted for once.
func TestFeederRendersTheTemplate(t *testing.T) {
	cases := []struct {
		name               string
		reasoning, content string
		msg                guard.Message
	}{
		{"plain", "", "Hello there.\n", guard.Message{Role: "assistant", Content: "Hello there.\n"}},
		{"content lead newlines", "", "\n\n  Hi\n\nthere", guard.Message{Role: "assistant", Content: "\n\n  Hi\n\nthere"}},
		{"reasoning field", "\n\nLet me think.\n\nYes.\n\n\n", "\n\nAnswer.", guard.Message{Role: "assistant", ReasoningContent: "\n\nLet me think.\n\nYes.\n\n\n", Content: "\n\nAnswer."}},
		{"reasoning only newlines", "\n\n", "Answer.", guard.Message{Role: "assistant", Content: "Answer."}},
		{"reasoning without answer", "Just thinking.", "", guard.Message{Role: "assistant", ReasoningContent: "Just thinking.", Content: ""}},
		{"inline think", "", "<think>\nStep one.\n\nStep </thin two.\n</think>\n\nThe answer </think> is 4.",
			guard.Message{Role: "assistant", Content: "<think>\nStep one.\n\nStep </thin two.\n</think>\n\nThe answer </think> is 4."}},
		{"inline think after spaces", "", " \n<think>Why</think>Because.", guard.Message{Role: "assistant", Content: " \n<think>Why</think>Because."}},
		{"almost a tag", "", "<thinking is fun>", guard.Message{Role: "assistant", Content: "<thinking is fun>"}},
		{"short tag prefix", "", "<th", guard.Message{Role: "assistant", Content: "<th"}},
		{"multi-byte", "Überlegung: 日本語 🍞", "Antwort — ja.", guard.Message{Role: "assistant", ReasoningContent: "Überlegung: 日本語 🍞", Content: "Antwort — ja."}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		// A <think> block written in content is the answer's text, as
		// the chat scaffold renders it.
		wantThinking, wantFed := renderedTurn(t, c.msg)
		for trial := range 40 {
			var deltas []fieldDelta
			for _, part := range []fieldDelta{{true, c.reasoning}, {false, c.content}} {
				size := 1 + rng.IntN(6)
				if trial == 0 {
					size = len(part.text) // the whole field in one delta
				}
				for _, d := range splitRunes(part.text, size) {
					deltas = append(deltas, fieldDelta{part.reasoning, d})
				}
			}
			f := newFeeder()
			var evs []*eventText
			for _, d := range deltas {
				ev := &eventText{}
				if d.reasoning {
					f.addReasoning(ev, d.text)
				} else {
					f.addContent(ev, d.text)
				}
				f.end(ev)
				evs = append(evs, ev)
			}
			f.finish()
			ops := f.take()
			var fed strings.Builder
			starts := 0
			thinking := false
			for _, op := range ops {
				if op.start {
					starts++
					thinking = op.thinking
				}
				if op.endThink {
					fed.WriteString(closeThink) // EndThinking's text
				}
				fed.WriteString(op.text)
			}
			if fed.String() != string(f.fed) {
				t.Fatalf("%s: ops text %q differs from fed %q", c.name, fed.String(), f.fed)
			}
			if wantFed == "" && starts == 0 {
				continue // an empty turn needs no response
			}
			if starts != 1 || thinking != wantThinking || fed.String() != wantFed {
				t.Fatalf("%s (trial %d, deltas %v): start %d thinking %v fed %q\nwant thinking %v fed %q",
					c.name, trial, deltas, starts, thinking, fed.String(), wantThinking, wantFed)
			}
			var got [2]strings.Builder
			for i, ev := range evs {
				if ev.pending != 0 {
					t.Fatalf("%s: event %d still has %d undecided parts", c.name, i, ev.pending)
				}
				for _, p := range ev.pieces {
					got[p.field].WriteString(p.text)
					if p.state == pieceFed && string(f.fed[p.start:p.start+len(p.text)]) != p.text {
						t.Fatalf("%s: piece %q is not at its fed offset %d", c.name, p.text, p.start)
					}
				}
			}
			if got[fieldReasoning].String() != c.reasoning || got[fieldContent].String() != c.content {
				t.Fatalf("%s: pieces add up to %q / %q", c.name, got[fieldReasoning].String(), got[fieldContent].String())
			}
		}
	}
}

// TestPartial rebuilds an event's text before a cut: fed text up to the
// cut, with the dropped text between included pieces.
func TestPartial(t *testing.T) {
	f := newFeeder()
	ev := &eventText{}
	f.addReasoning(ev, "\nabc\n")
	f.addContent(ev, "\n\nxyz")
	f.finish()
	f.end(ev)
	// fed: "abc" + "\n</think>\n\n" (EndThinking) + "xyz"
	if string(f.fed) != "abc\n</think>\n\nxyz" {
		t.Fatalf("fed %q", f.fed)
	}
	for cut, want := range map[int]fieldTexts{
		0:  {},
		2:  {fieldReasoning: "\nab"},
		3:  {fieldReasoning: "\nabc"},
		14: {fieldReasoning: "\nabc"},
		15: {fieldReasoning: "\nabc", fieldContent: "\n\nx"}, // the reasoning's dropped tail is not between two of its pieces
		17: {fieldReasoning: "\nabc", fieldContent: "\n\nxyz"},
	} {
		if got := ev.partial(cut); got != want {
			t.Errorf("cut %d: %q, want %q", cut, got, want)
		}
	}
}
