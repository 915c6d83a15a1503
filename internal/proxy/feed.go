package proxy

import (
	"strings"
	"unicode/utf8"

	"github.com/streamguard/streamguard/internal/chatmsg"
)

// fieldKind names the upstream field a piece of text came from.
type fieldKind uint8

const (
	fieldContent fieldKind = iota
	fieldReasoning
	fieldRefusal
	// fieldTool is a tool call's name and arguments: judged, never
	// rebuilt into a partial delta (a call goes out whole or not at all).
	fieldTool
	numFields
)

type pieceState uint8

const (
	pieceFed     pieceState = iota // judged, at fed offset start
	pieceDropped                   // left out by the template (not judged)
	pieceHeld                      // not decided yet
)

// piece is a run of one upstream field's text and what became of it.
type piece struct {
	field fieldKind
	text  string
	state pieceState
	start int // fed offset of text[0] when fed
}

// eventText is the text one upstream event (or a whole message)
// contributed, for releasing the event and for rebuilding its part before
// a cut.
type eventText struct {
	pieces []piece
	// pending counts the event's text not decided yet (the reasoning's
	// held trailing newlines); an event is released only when it is zero.
	pending int
	// fedEnd is the fed length once the event's text was fed: the event
	// may be released when everything before fedEnd was judged.
	fedEnd int
}

// feedOp is one call on the guard stream: open the response or close its
// think block, then append text.
type feedOp struct {
	start    bool
	thinking bool
	endThink bool
	// tag is a tool call's tag (tokenizer.ToolCallStart or ToolCallEnd),
	// fed as the model's token for it; 0 for none.
	tag  int
	text string
}

// closeThink is what the chat template writes after the reasoning; the
// guard's EndThinking feeds it with the real </think> token.
const closeThink = "\n</think>\n\n"

type pieceRef struct {
	ev *eventText
	i  int
}

// feeder renders an assistant turn arriving in pieces the way the Qwen3
// chat template renders a whole one: the reasoning (from reasoning fields,
// only) loses its leading and trailing newlines and is closed by
// "\n</think>\n\n" (EndThinking); the content, all of it text, loses its
// leading newlines; a turn without reasoning gets the empty think block
// (StartResponse(false)). Text that depends on what comes next (trailing
// newlines of the reasoning) is held until decided.
type feeder struct {
	fed []byte   // every byte fed, synthetic text included
	ops []feedOp // produced since the last take
	// tail is the text of the last op in ops, built here and set at the
	// next op or take: appended to a string, one answer of many small
	// pieces (thousands of tool calls) copied its text again per piece.
	tail strings.Builder

	started       bool // the response was opened
	reasoningOpen bool // the think block is open
	reasoningLead bool // reasoning's leading newlines are still dropped
	reasoningDone bool // reasoning ended: later reasoning counts as content
	contentLead   bool // content's leading newlines are still dropped
	contentSeen   bool // content came: the first tool call starts on a new line
	heldNL        []pieceRef

	// Tool calls (toolCall): how many tool_calls entries began (numbered
	// from 0) and whether the legacy function_call did; the open call's
	// key, whether its arguments began, its name so far, and the events
	// that carry it (held until it closes).
	toolCalls    int
	functionCall bool
	callOpen     bool
	callKey      string
	callArgs     bool
	callName     strings.Builder // appended to a string, a name in many pieces was copied per piece
	callEvs      []*eventText
	unescape     chatmsg.Unescaper // the open call's arguments
}

func newFeeder() *feeder {
	return &feeder{reasoningLead: true, contentLead: true}
}

// take returns the guard calls produced since the last take.
func (f *feeder) take() []feedOp {
	f.setTail()
	ops := f.ops
	f.ops = nil
	return ops
}

// push adds an op after the last one, whose text is then complete.
func (f *feeder) push(op feedOp) {
	f.setTail()
	f.ops = append(f.ops, op)
}

// setTail gives the last op the text built for it.
func (f *feeder) setTail() {
	if f.tail.Len() > 0 {
		f.ops[len(f.ops)-1].text = f.tail.String() // an op gets its text here only
		f.tail.Reset()
	}
}

// end marks the end of an event's text.
func (f *feeder) end(ev *eventText) { ev.fedEnd = len(f.fed) }

// addReasoning takes text from a reasoning field.
func (f *feeder) addReasoning(ev *eventText, text string) {
	if text == "" {
		return
	}
	f.reasoning(ev, fieldReasoning, text)
}

// addRefusal takes text from the refusal field: answer text, judged in
// order with the content.
func (f *feeder) addRefusal(ev *eventText, text string) {
	if text == "" {
		return
	}
	f.content(ev, fieldRefusal, text)
}

// addContent takes text from the content field. It is answer text, all
// of it: a <think> block written in it is text like the rest, judged as
// the answer (reasoning comes only from the reasoning fields).
func (f *feeder) addContent(ev *eventText, text string) {
	if text == "" {
		return
	}
	f.content(ev, fieldContent, text)
}

// reasoning takes reasoning text from field src.
func (f *feeder) reasoning(ev *eventText, src fieldKind, text string) {
	if f.reasoningDone {
		f.content(ev, src, text)
		return
	}
	if f.reasoningLead {
		n := len(text) - len(strings.TrimLeft(text, "\n"))
		if n > 0 {
			f.drop(ev, src, text[:n])
			text = text[n:]
		}
		if text == "" {
			return
		}
		f.reasoningLead = false
	}
	body := strings.TrimRight(text, "\n")
	if body != "" {
		if !f.started {
			f.start(true)
			f.reasoningOpen = true
		}
		f.releaseHeldNL(true)
		f.feed(ev, src, body)
	}
	if tail := text[len(body):]; tail != "" {
		ev.pending++
		ev.pieces = append(ev.pieces, piece{field: src, text: tail, state: pieceHeld})
		f.heldNL = append(f.heldNL, pieceRef{ev, len(ev.pieces) - 1})
	}
}

// endReasoning drops the reasoning's trailing newlines and closes the
// think block.
func (f *feeder) endReasoning() {
	f.releaseHeldNL(false)
	if f.reasoningOpen {
		// The bytes stay in fed, as the judged tokens decode to them.
		f.fed = append(f.fed, closeThink...)
		f.push(feedOp{endThink: true})
		f.reasoningOpen = false
	}
	f.reasoningDone = true
}

// tag feeds a tool call's tag, id (spelled text): the bytes go into fed,
// as the judged token decodes to them.
func (f *feeder) tag(id int, text string) {
	f.fed = append(f.fed, text...)
	f.push(feedOp{tag: id})
}

// content takes answer text from field src.
func (f *feeder) content(ev *eventText, src fieldKind, text string) {
	f.closeCall()
	f.contentSeen = true
	if !f.reasoningDone {
		f.endReasoning()
	}
	if f.contentLead {
		n := len(text) - len(strings.TrimLeft(text, "\n"))
		if n > 0 {
			f.drop(ev, src, text[:n])
			text = text[n:]
		}
		if text == "" {
			return
		}
		f.contentLead = false
	}
	if !f.started {
		f.start(false)
	}
	f.feed(ev, src, text)
}

// finish ends the turn: held text is decided, the think block and the
// last tool call closed.
func (f *feeder) finish() {
	if !f.reasoningDone {
		f.endReasoning()
	}
	f.closeCall()
}

func (f *feeder) start(thinking bool) {
	f.started = true
	f.push(feedOp{start: true, thinking: thinking})
}

func (f *feeder) feed(ev *eventText, src fieldKind, text string) {
	ev.pieces = append(ev.pieces, piece{field: src, text: text, state: pieceFed, start: len(f.fed)})
	f.feedSynthetic(text)
	ev.fedEnd = max(ev.fedEnd, len(f.fed))
}

func (f *feeder) feedSynthetic(text string) {
	f.fed = append(f.fed, text...)
	// A start or end-think op carries the text that follows it;
	// consecutive text is one AppendText call.
	if len(f.ops) == 0 {
		f.ops = append(f.ops, feedOp{})
	}
	f.tail.WriteString(text)
}

func (f *feeder) drop(ev *eventText, src fieldKind, text string) {
	ev.pieces = append(ev.pieces, piece{field: src, text: text, state: pieceDropped})
}

// releaseHeldNL feeds or drops the reasoning's held newlines.
func (f *feeder) releaseHeldNL(feed bool) {
	for _, r := range f.heldNL {
		p := &r.ev.pieces[r.i]
		r.ev.pending--
		if feed {
			p.state, p.start = pieceFed, len(f.fed)
			f.feedSynthetic(p.text)
			r.ev.fedEnd = max(r.ev.fedEnd, len(f.fed))
		} else {
			p.state = pieceDropped
		}
	}
	f.heldNL = nil
}

// fieldTexts is text per field.
type fieldTexts [numFields]string

// partial rebuilds the event's text that lies before fed offset cut, per
// field: fed pieces up to cut and the dropped text between them.
func (e *eventText) partial(cut int) fieldTexts {
	var out, gap [numFields]strings.Builder
	texts := func() (t fieldTexts) {
		for i := range out {
			t[i] = out[i].String()
		}
		return t
	}
	for _, p := range e.pieces {
		switch p.state {
		case pieceDropped:
			gap[p.field].WriteString(p.text)
			continue
		case pieceHeld:
			return texts()
		}
		if p.start >= cut {
			break
		}
		n := min(len(p.text), cut-p.start)
		out[p.field].WriteString(gap[p.field].String())
		gap[p.field].Reset()
		out[p.field].WriteString(validPrefix(p.text[:n]))
		if n < len(p.text) {
			break
		}
	}
	return texts()
}

// validPrefix trims an incomplete UTF-8 character from the end of s (cuts
// fall on character boundaries; this keeps the JSON valid regardless).
func validPrefix(s string) string {
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
