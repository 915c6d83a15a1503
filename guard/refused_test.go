package guard

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// A refused call queues nothing and loses nothing: text a response held
// back is still judged after a prompt that was refused, whatever refused
// it (an id outside the vocabulary, the context length).
func TestRefusedCallKeepsHeldText(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		model  func(t *testing.T) *Model
		refuse func(s *Stream) error
	}{
		{"bad id", func(t *testing.T) *Model { return tinyModel(t, "f32", nil) },
			func(s *Stream) error { _, err := s.JudgePromptIDs(ctx, []int{-1, tokenizer.ImEnd}); return err }},
		{"context length", func(t *testing.T) *Model {
			return tinyModel(t, "max64", func(c *config.Config) { c.MaxPositionEmbeddings = 64 })
		}, func(s *Stream) error {
			_, err := s.JudgePrompt(ctx, []Message{{Role: "user", Content: strings.Repeat("tea and cake ", 40)}})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.model(t)
			s := m.NewStream()
			defer s.Close()
			if _, err := s.JudgePrompt(ctx, []Message{{Role: "user", Content: "Hi"}}); err != nil {
				t.Fatal(err)
			}
			tv, err := s.AppendText(ctx, "Sure, bombs")
			if err != nil {
				t.Fatal(err)
			}
			before, pending := s.Len(), s.Pending()
			if err := c.refuse(s); err == nil {
				t.Fatal("the call was taken")
			}
			if s.Len() != before || s.Pending() != pending {
				t.Fatalf("a refused call changed the stream: %d fed, %d queued; before %d, %d", s.Len(), s.Pending(), before, pending)
			}
			rest, err := s.FlushText(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n, want := len(tv)+len(rest), len(m.tok.EncodeText("Sure, bombs")); n != want {
				t.Fatalf("%d response tokens judged, want %d", n, want)
			}
		})
	}
}

// Ids appended after text come after all of it: the text a response held
// back is ended first, as the ids begin a new text.
func TestIDsAfterHeldText(t *testing.T) {
	m, s := promptedStream(t)
	ctx := context.Background()
	a, err := s.AppendText(ctx, "Hello world")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AppendIDs(ctx, m.tok.EncodeText(" again"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.FlushText(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, tv := range append(append(a, b...), c...) {
		got += tv.Text
	}
	if got != "Hello world again" {
		t.Fatalf("judged %q", got)
	}
}

// A refused AppendIDs leaves no assistant header behind: the response can
// still be opened as the caller likes.
func TestRefusedIDsQueueNoHeader(t *testing.T) {
	_, s := promptedStream(t)
	ctx := context.Background()
	if _, err := s.AppendIDs(ctx, []int{-1}); err == nil {
		t.Fatal("an id outside the vocabulary was taken")
	}
	if s.Pending() != 0 {
		t.Fatalf("the refused call queued %d tokens", s.Pending())
	}
	if err := s.StartResponse(true); err != nil {
		t.Fatalf("the response cannot be opened: %v", err)
	}
}

// Queueing on a stream while another goroutine steps it is allowed (the
// package doc says so): under -race, nothing the forward writes is read
// without the lock.
func TestQueueWhileStepping(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	if err := s.QueuePrompt([]Message{{Role: "user", Content: strings.Repeat("tea and cake ", 40)}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	stop := make(chan struct{})
	go func() {
		defer wg.Done()
		for range 3000 { // well inside the tiny model's 8,192 positions
			select {
			case <-stop:
				return
			default:
			}
			if err := s.QueueText("a "); err != nil {
				t.Error(err)
				return
			}
			_, _ = s.CacheBytes(), s.Len()
		}
	}()
	for range 60 {
		if _, err := m.Step(context.Background(), []*Stream{s}, StepOptions{MaxTokens: 2}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// promptedStream is a stream of the f32 tiny model whose prompt (userMsg)
// was judged; the test's cleanup closes it.
func promptedStream(t *testing.T) (*Model, *Stream) {
	t.Helper()
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	t.Cleanup(func() { s.Close() })
	if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// TestHeldTextRefusedPastTheContext: the end of a response's text is held
// back while later text could still change how it encodes — one word, here
// a run of letters, may be held whole. Held text that would not fit the
// context if the text ended there is refused (ErrContextLength, nothing
// lost: the stream holds what it held), instead of being kept, unjudged and
// unbounded, until the turn ends.
func TestHeldTextRefusedPastTheContext(t *testing.T) {
	m, s := promptedStream(t)
	chunk := strings.Repeat("a", 4<<10)
	held := 0
	header := -1 // the assistant header, queued with the first text
	for {
		err := s.QueueText(chunk)
		if err != nil {
			if !errors.Is(err, ErrContextLength) {
				t.Fatalf("after %d bytes: %v", held, err)
			}
			break
		}
		held += len(chunk)
		if header < 0 {
			header = s.Pending()
		}
		if s.Pending() != header || s.HeldBytes() != held {
			t.Fatalf("after %d bytes: %d pending, %d held", held, s.Pending(), s.HeldBytes())
		}
	}
	// The refusal comes with the first chunk whose text would not fit:
	// what it held before makes as many tokens as fit, or fewer.
	ids := func(n int) int { return len(m.tok.EncodeText(strings.Repeat("a", n))) }
	if room := m.net.MaxPositions - s.Len() - header; ids(held) > room || ids(held+len(chunk)) <= room {
		t.Fatalf("refused after %d held bytes (%d tokens; %d with the chunk) with room for %d", held, ids(held), ids(held+len(chunk)), room)
	}
	if s.HeldBytes() != held || s.Pending() != header {
		t.Fatalf("the refused chunk changed the stream: %d held, %d pending", s.HeldBytes(), s.Pending())
	}
}

// TestHeldWordQueuedInPlace: every queueing call saves a copy of the
// stream's text encoder (to undo a refused call); while a long word is
// held, the copy must not cost the encoder its tail's spare room, or each
// small write would copy everything held so far (quadratic in the word).
func TestHeldWordQueuedInPlace(t *testing.T) {
	_, s := promptedStream(t)
	if err := s.QueueText(strings.Repeat("a", 8<<10)); err != nil {
		t.Fatal(err)
	}
	const calls = 4000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		if err := s.QueueText("aaaa"); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	// In place: the tail grows by doubling, the held word is looked at
	// again each time it has grown by a quarter (its 8–24 KiB copied
	// then), and its ids counted when a bound no longer shows they fit
	// (a few times here): under 2 KiB a call. Copied on every call, the
	// tail alone would cost 16 KiB a call on average here.
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 2048 {
		t.Fatalf("%d bytes allocated per 4-byte QueueText of a held word", per)
	}
}

// TestAcceptedHeldTextFlushes: what AppendText accepted of a long word (a
// run of letters, held whole) fits the stream's bound when flushed. The
// check once counted held text at MinIDs (512 bytes a token) where letters
// take about 8: every AppendText succeeded, then FlushText, EndResponse and
// the next JudgePrompt failed with ErrContextLength for ever, the stream
// wedged and the text never judged.
func TestAcceptedHeldTextFlushes(t *testing.T) {
	_, s := promptedStream(t)
	ctx := context.Background()
	if err := s.SetMaxTokens(1000); err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("a", 16<<10) // 2,048 tokens of text each
	accepted := 0
	for range 8 {
		if _, err := s.AppendText(ctx, chunk); err != nil {
			if !errors.Is(err, ErrContextLength) {
				t.Fatal(err)
			}
			break // refused: the stream holds what it held before
		}
		accepted++
	}
	// doc.go: "once what a stream holds could no longer fit, AppendText
	// refuses more"; so what it accepted must flush within the bound.
	if _, err := s.FlushText(ctx); err != nil {
		t.Fatalf("FlushText after %d accepted appends (%d bytes held): %v", accepted, s.HeldBytes(), err)
	}
	if _, err := s.EndResponse(ctx); err != nil {
		t.Fatalf("EndResponse: %v", err)
	}
}

// TestHeldWordResplitAtBound: BPE is not local — " NONINFRINGEMENT" is one
// id, " NONINFRINGEMENTh" six — so a short held word is counted again at
// every write near the bound, not bounded from its last count. Counted
// once and bounded by three ids a byte after, "h" was accepted and
// FlushText then failed for good.
func TestHeldWordResplitAtBound(t *testing.T) {
	m, s := promptedStream(t)
	ctx := context.Background()
	if got := len(m.tok.EncodeText(" NONINFRINGEMENTh")); got != 6 {
		t.Fatalf("premise: %d ids, want 6", got)
	}
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxTokens(s.Len() + s.Pending() + 5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendText(ctx, " NONINFRINGEMENT"); err != nil {
		t.Fatal(err) // one id: fits
	}
	if _, err := s.AppendText(ctx, "h"); !errors.Is(err, ErrContextLength) {
		t.Fatalf("AppendText(\"h\") = %v, want ErrContextLength (six ids, room for five)", err)
	}
	if _, err := s.FlushText(ctx); err != nil {
		t.Fatalf("FlushText of what was accepted: %v", err)
	}
}

// TestHeldTextAtTheBoundFlushes: held text that fits exactly is accepted
// and FlushText judges it; EndResponse then needs room for the closing
// <|im_end|> as well, and says so.
func TestHeldTextAtTheBoundFlushes(t *testing.T) {
	_, s := promptedStream(t)
	ctx := context.Background()
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxTokens(s.Len() + s.Pending() + 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendText(ctx, " hello"); err != nil {
		t.Fatal(err) // one id: fits
	}
	if _, err := s.EndResponse(ctx); !errors.Is(err, ErrContextLength) {
		t.Fatalf("EndResponse at the bound: %v, want ErrContextLength (no room for <|im_end|>)", err)
	}
	tvs, err := s.FlushText(ctx)
	if err != nil || len(tvs) != 1 {
		t.Fatalf("FlushText: %d verdicts, %v; want the held word's one", len(tvs), err)
	}
}

// TestHeldWordRateChangeFlushes: a long held word whose end tokenizes at
// fewer bytes per id than its start (10 bytes an id, then 1: both runs of
// letters, one pre-token) is bounded from its last count at three ids a
// new byte, not scaled from it: scaled, it was accepted though flushing it
// made far more ids than the room left, and FlushText failed on text
// AppendText had accepted.
func TestHeldWordRateChangeFlushes(t *testing.T) {
	m, s := promptedStream(t)
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	head := strings.Repeat("internationalization", 55) // 1100 bytes, ~110 ids
	tail := strings.Repeat("xQ", 137)                  // 274 bytes, ~274 ids
	const room = 200
	if err := s.SetMaxTokens(s.Len() + s.Pending() + room); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueText(head); err != nil {
		t.Fatalf("head (%d ids) refused: %v", len(m.tok.EncodeText(head)), err)
	}
	if err := s.QueueText(tail); err == nil {
		whole := len(m.tok.EncodeText(head + tail))
		if err := s.QueueFlushText(); err != nil {
			t.Fatalf("held word of %d ids accepted with room for %d; QueueFlushText: %v", whole, room, err)
		}
	}
}

// TestHeldWordNFCShrinkFlushes: the held-text bound counts the raw bytes
// written since the last count, not HeldBytes' growth: text the encoder
// holds unlooked-at (the tail of a word over 256 bytes) counts raw until it
// is NFC-normalised (Hangul jamo L+V+T: 9 bytes to 3), so 60 bytes of new
// text once looked like none, were accepted, and FlushText then failed.
func TestHeldWordNFCShrinkFlushes(t *testing.T) {
	m, s := promptedStream(t)
	ctx := context.Background()
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	word := strings.Repeat("internationalization", 20) // 400 bytes: one held word, looked at again at 500
	jamo := "\u1100\u1161\u11a8"                       // 9 bytes, NFC 각 (3 bytes)
	tail := strings.Repeat("xQ", 30)                   // 60 bytes, about an id a byte
	fits := len(m.tok.EncodeText(word + strings.Repeat(jamo, 10)))
	room := fits + 20
	if err := s.SetMaxTokens(s.Len() + s.Pending() + room); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendText(ctx, word); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := s.AppendText(ctx, jamo); err != nil {
			t.Fatalf("jamo (%d ids with room for %d): %v", fits, room, err)
		}
	}
	whole := len(m.tok.EncodeText(word + strings.Repeat(jamo, 10) + tail))
	if _, err := s.AppendText(ctx, tail); err != nil {
		return // refused: sound
	}
	if _, err := s.FlushText(ctx); err != nil {
		t.Fatalf("AppendText accepted a held word of %d ids with room for %d; FlushText: %v", whole, room, err)
	}
}

// TestEndThinkingHeldAnswerStartFlushes: EndThinking leaves the answer's
// "\n\n" held (one id to come) and checks it against the bound as all held
// text: when the reasoning, "\n" and </think> filled the stream exactly,
// EndThinking succeeded and FlushText then failed.
func TestEndThinkingHeldAnswerStartFlushes(t *testing.T) {
	m, s := promptedStream(t)
	ctx := context.Background()
	if err := s.StartResponse(true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendText(ctx, "Let me think"); err != nil {
		t.Fatal(err)
	}
	// What EndThinking queues: the held "think" with "\n", then </think>.
	end := len(m.tok.EncodeText(" think\n")) + 1
	if err := s.SetMaxTokens(s.Len() + s.Pending() + end); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EndThinking(ctx); err != nil {
		return // refused: sound
	}
	if s.HeldBytes() == 0 {
		t.Fatal("premise: the answer's \"\\n\\n\" is held")
	}
	if _, err := s.FlushText(ctx); err != nil {
		t.Fatalf("EndThinking accepted (%d bytes held, the stream full); FlushText: %v", s.HeldBytes(), err)
	}
}

// TestRefusedHeldAppendsDoNotRecount: at the bound, a refused append to a
// long held word does not count the whole word again (a BPE of 32 KiB, 1.2
// MB allocated, a call when it did): the server keeps a stream refused for
// held text, so a client could repeat a one-byte append for ever, each
// costing a BPE of up to max_stream_tokens × ~26 bytes of held word.
func TestRefusedHeldAppendsDoNotRecount(t *testing.T) {
	m, s := promptedStream(t)
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	word := strings.Repeat("a", 32<<10)
	ids := len(m.tok.EncodeText(word))
	if err := s.SetMaxTokens(s.Len() + s.Pending() + ids); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueText(word); err != nil {
		t.Fatal(err)
	}
	const calls = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		if err := s.QueueText("a"); !errors.Is(err, ErrContextLength) {
			t.Fatalf("an append past the bound: %v, want ErrContextLength", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 16<<10 {
		t.Fatalf("%d bytes allocated per refused one-byte append (the %d-byte held word re-encoded each time)", per, len(word))
	}
}

// TestNearBoundHeldAppendsDoNotRecount: near the bound, one-byte appends to
// a long held word are not each counted (a run of letters at 26 bytes an id
// stays within a margin of the bound for ~500 appends: at the tiny model's
// 8,192 positions, 416 appends of one byte to a 212 KB word once cost 415
// BPEs, 50 s of CPU here); the last ids of room are given up instead.
func TestNearBoundHeldAppendsDoNotRecount(t *testing.T) {
	m, s := promptedStream(t)
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	unit := "abcdefghijklmnopqrstuvwxyz" // 26 bytes an id, repeated
	word := strings.Repeat(unit, 1<<10)
	ids := len(m.tok.EncodeText(word))
	if err := s.SetMaxTokens(s.Len() + s.Pending() + ids + 10); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueText(word); err != nil {
		t.Fatal(err)
	}
	const calls = 52
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range calls {
		// Accepted (two ids more at most, room for ten) or refused
		// within the margin: either, but not at a BPE of the word each.
		if err := s.QueueText(unit[i%26 : i%26+1]); err != nil && !errors.Is(err, ErrContextLength) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 16<<10 {
		t.Fatalf("%d bytes allocated per one-byte append near the bound (the %d-byte held word re-encoded each time)", per, len(word))
	}
}

// heldWordNearBound opens a response on a fresh stream, sets its limit to
// the ids of word plus room, and queues word (held whole: one run of
// letters over 256 bytes, so later text waits unlooked-at in the encoder).
func heldWordNearBound(t *testing.T, word string, room int) (*Model, *Stream) {
	t.Helper()
	m, s := promptedStream(t)
	if err := s.StartResponse(false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxTokens(s.Len() + s.Pending() + len(m.tok.EncodeText(word)) + room); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueText(word); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// TestRefusedHeldBaseRefusesOtherTextThatFits: after one append is refused
// for not fitting (330 digits, 330 ids, room for 300), a different append
// of the same length that fits (110 ids) is counted and taken: only the
// same text again is refused on the earlier count (a rule that refused any
// append as long on that base lost the caller 300 ids of room).
func TestRefusedHeldBaseRefusesOtherTextThatFits(t *testing.T) {
	word := strings.Repeat("internationalization", 100) // 2,000 bytes, one held word
	digits := strings.Repeat("7", 330)
	prose := strings.Repeat(" ab", 110) // 330 bytes, 110 ids
	const room = 300

	// Premise: on its own, the prose fits and flushes.
	m, fresh := heldWordNearBound(t, word, room)
	if n := len(m.tok.EncodeText(word+prose)) - len(m.tok.EncodeText(word)); n > room-100 {
		t.Fatalf("premise: the prose makes %d ids, room is %d", n, room)
	}
	if err := fresh.QueueText(prose); err != nil {
		t.Fatalf("premise: the prose alone is refused: %v", err)
	}
	if _, err := fresh.FlushText(context.Background()); err != nil {
		t.Fatalf("premise: the prose alone does not flush: %v", err)
	}

	_, s := heldWordNearBound(t, word, room)
	if err := s.QueueText(digits); !errors.Is(err, ErrContextLength) {
		t.Fatalf("330 digits with room for 300 ids: %v, want ErrContextLength", err)
	}
	if err := s.QueueText(prose); err != nil {
		t.Fatalf("an append that fits (110 ids, room for %d) refused after an earlier, different append of as many bytes was: %v", room, err)
	}
}

// TestRefusedHeldBaseRefusedAfterLimitRaised: a gateway that raises the
// stream's limit after a held overrun and sends the same text again, which
// now fits, has it taken: the remembered refusal holds for no more room
// than it was counted with.
func TestRefusedHeldBaseRefusedAfterLimitRaised(t *testing.T) {
	word := strings.Repeat("internationalization", 100)
	digits := strings.Repeat("7", 330) // 330 ids
	_, s := heldWordNearBound(t, word, 300)
	if err := s.QueueText(digits); !errors.Is(err, ErrContextLength) {
		t.Fatalf("330 digits with room for 300 ids: %v, want ErrContextLength", err)
	}
	if err := s.SetMaxTokens(s.limit + 40); err != nil { // room for 340 ids now
		t.Fatal(err)
	}
	if err := s.QueueText(digits); err != nil {
		t.Fatalf("330 digits with room for 340 ids, after the limit was raised: %v", err)
	}
	if _, err := s.FlushText(context.Background()); err != nil {
		t.Fatal(err)
	}
}
