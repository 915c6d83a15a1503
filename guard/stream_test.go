package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

const (
	testPrompt   = "How do I make a cup of tea?"
	testResponse = "Boil water, pour it over the leaves, wait three minutes — then enjoy 🍵 with milk or lemon."
)

var userMsg = []Message{{Role: "user", Content: testPrompt}}

// TestResponseFeedingIsInvariant feeds one response as ids all at once, one
// by one, in chunks of 3, and as text in chunks of several sizes: every
// verdict must be identical (bitwise probabilities), since each token's
// logits do not depend on how the sequence was cut. It holds for every
// KV-cache type.
func TestResponseFeedingIsInvariant(t *testing.T) {
	for _, kv := range kvCaches {
		t.Run(kv.String(), func(t *testing.T) { requireFeedingInvariant(t, tinyModelKV(t, "f32", nil, kv)) })
	}
}

func requireFeedingInvariant(t *testing.T, m *Model) {
	respIDs := m.tok.Encode(testResponse)

	feed := func(t *testing.T, f func(s *Stream) []TokenVerdict) ([]TokenVerdict, *PromptVerdict, Decision) {
		s := m.NewStream()
		defer s.Close()
		pv, err := s.JudgePrompt(context.Background(), userMsg)
		if err != nil {
			t.Fatal(err)
		}
		return f(s), pv, s.Decision()
	}
	must := func(tv []TokenVerdict, err error) []TokenVerdict {
		if err != nil {
			t.Error(err)
		}
		return tv
	}
	want, wantPV, wantD := feed(t, func(s *Stream) []TokenVerdict { return must(s.AppendIDs(context.Background(), respIDs)) })
	if len(want) != len(respIDs) {
		t.Fatalf("%d verdicts for %d response ids", len(want), len(respIDs))
	}
	// The header is fed before the first response token but has no verdict.
	if hdr := m.scaffold.responseHeader; want[0].ID != respIDs[0] || want[0].Index != 0 || want[0].Position != wantPV.Position+1+len(hdr) {
		t.Fatalf("first verdict %+v, want id %d, index 0 at position %d", want[0], respIDs[0], wantPV.Position+1+len(hdr))
	}
	cases := map[string]func(s *Stream) []TokenVerdict{
		"ids one by one": func(s *Stream) []TokenVerdict {
			var all []TokenVerdict
			for _, id := range respIDs {
				all = append(all, must(s.AppendIDs(context.Background(), []int{id}))...)
			}
			return all
		},
		"ids by 3": func(s *Stream) []TokenVerdict {
			var all []TokenVerdict
			for i := 0; i < len(respIDs); i += 3 {
				all = append(all, must(s.AppendIDs(context.Background(), respIDs[i:min(i+3, len(respIDs))]))...)
			}
			return all
		},
	}
	for _, n := range []int{1, 2, 5, 17, 1000} {
		cases["text by "+strconv.Itoa(n)] = func(s *Stream) []TokenVerdict {
			var all []TokenVerdict
			b := []byte(testResponse)
			for i := 0; i < len(b); i += n {
				all = append(all, must(s.AppendText(context.Background(), string(b[i:min(i+n, len(b))])))...)
			}
			return append(all, must(s.FlushText(context.Background()))...)
		}
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			got, pv, d := feed(t, f)
			sameVerdicts(t, name, got, want)
			if !bitsEqual(pv.RiskProbs, wantPV.RiskProbs) {
				t.Errorf("prompt verdict differs")
			}
			if d != wantD {
				t.Errorf("decision %+v, want %+v", d, wantD)
			}
		})
	}
}

// TestStepBatchesBitwise runs several streams at different stages through
// Model.Step together, with chunked prefill, from several goroutines, and
// compares every verdict with the same streams run alone, for every
// KV-cache type.
func TestStepBatchesBitwise(t *testing.T) {
	for _, kv := range kvCaches {
		t.Run(kv.String(), func(t *testing.T) { requireStepBatchesBitwise(t, tinyModelKV(t, "f32", nil, kv)) })
	}
}

func requireStepBatchesBitwise(t *testing.T, m *Model) {
	tok := m.tok
	prompts := []string{"hi", testPrompt, strings.Repeat("A long prompt about many things. ", 12), "¿Qué tal?"}
	responses := []string{"Hello there.", testResponse, "No.", strings.Repeat("word ", 30)}

	solo := make([][]TokenVerdict, len(prompts))
	soloPV := make([]*PromptVerdict, len(prompts))
	for i := range prompts {
		s := m.NewStream()
		pv, err := s.JudgePrompt(context.Background(), []Message{{Role: "user", Content: prompts[i]}})
		if err != nil {
			t.Fatal(err)
		}
		tv, err := s.AppendIDs(context.Background(), tok.Encode(responses[i]))
		if err != nil {
			t.Fatal(err)
		}
		soloPV[i], solo[i] = pv, tv
		s.Close()
	}

	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			streams := make([]*Stream, len(prompts))
			got := make([][]TokenVerdict, len(prompts))
			gotPV := make([]*PromptVerdict, len(prompts))
			for i := range prompts {
				streams[i] = m.NewStream()
				defer streams[i].Close()
				if err := streams[i].QueuePrompt([]Message{{Role: "user", Content: prompts[i]}}); err != nil {
					t.Error(err)
					return
				}
			}
			// Responses are queued while prompts are still being prefilled
			// in chunks of 5+g tokens.
			for step := 0; ; step++ {
				if step == 2 {
					for i := range streams {
						if err := streams[i].QueueIDs(tok.Encode(responses[i])); err != nil {
							t.Error(err)
							return
						}
					}
				}
				rs, err := m.Step(context.Background(), streams, StepOptions{MaxTokens: 5 + g})
				if err != nil {
					t.Error(err)
					return
				}
				pending := 0
				for i, r := range rs {
					if r.Prompt != nil {
						gotPV[i] = r.Prompt
					}
					got[i] = append(got[i], r.Tokens...)
					pending += streams[i].Pending()
				}
				if pending == 0 && step >= 2 {
					break
				}
			}
			for i := range prompts {
				sameVerdicts(t, "stream "+prompts[i], got[i], solo[i])
				if gotPV[i] == nil || !bitsEqual(gotPV[i].RiskProbs, soloPV[i].RiskProbs) || gotPV[i].Position != soloPV[i].Position {
					t.Errorf("stream %d: prompt verdict %+v, want %+v", i, gotPV[i], soloPV[i])
				}
			}
		}()
	}
	wg.Wait()
}

// TestModerateMatchesStream checks that judging a whole conversation gives
// the same prompt verdict and content verdicts as the streaming calls, and
// that the scaffold is left out.
func TestModerateMatchesStream(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	res, err := m.Moderate(context.Background(), []Message{{Role: "user", Content: testPrompt}, {Role: "assistant", Content: testResponse}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewStream()
	defer s.Close()
	pv, err := s.JudgePrompt(context.Background(), userMsg)
	if err != nil {
		t.Fatal(err)
	}
	tv, err := s.AppendText(context.Background(), testResponse)
	if err != nil {
		t.Fatal(err)
	}
	tv2, err := s.FlushText(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sameVerdicts(t, "Moderate vs stream", res.Tokens, append(tv, tv2...))
	if res.Prompt.Position != pv.Position || !bitsEqual(res.Prompt.RiskProbs, pv.RiskProbs) {
		t.Errorf("prompt verdict %+v, want %+v", res.Prompt, pv)
	}
	if d := s.Decision(); res.Decision == nil || *res.Decision != d {
		t.Errorf("decision %+v, want %+v", res.Decision, d)
	}
	// The prompt verdict sits at the user turn's <|im_end|>, where the
	// query heads were trained.
	chat, _ := m.tok.RenderChat(chatMessages(userMsg))
	if pv.Position != chat.UserEndIndex {
		t.Errorf("prompt verdict at position %d, want the <|im_end|> at %d", pv.Position, chat.UserEndIndex)
	}
	// Prompt only.
	res, err = m.Moderate(context.Background(), userMsg, nil)
	if err != nil || res.Decision != nil || len(res.Tokens) != 0 || res.Prompt == nil {
		t.Fatalf("prompt-only moderation: %+v, %v", res, err)
	}
}

// TestStreamFeedsTheTemplateIDs checks the exact ids a multi-turn stream
// feeds: the chat template of the first turn, the assistant scaffold, the
// response, "<|im_end|>\n", then the next user turn; the second prompt
// verdict equals a fresh stream judging those ids at once.
func TestStreamFeedsTheTemplateIDs(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	tok := m.tok
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(context.Background(), userMsg); err != nil {
		t.Fatal(err)
	}
	resp := tok.Encode("Sure.")
	if _, err := s.AppendIDs(context.Background(), resp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EndResponse(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := []Message{{Role: "user", Content: "And coffee?"}}
	pv2, err := s.JudgePrompt(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := tok.RenderChat(chatMessages(userMsg))
	second, _ := tok.RenderChat(chatMessages(next))
	var ids []int
	ids = append(ids, first.IDs[:first.UserEndIndex+1]...)
	ids = append(ids, 198, 151644, 77091, 198, 151667, 271, 151668, 271)
	ids = append(ids, resp...)
	ids = append(ids, 151645, 198)
	ids = append(ids, second.IDs[:second.UserEndIndex+1]...)
	if s.Len() != len(ids) {
		t.Fatalf("stream fed %d tokens, want %d", s.Len(), len(ids))
	}
	fresh := m.NewStream()
	defer fresh.Close()
	pv, err := fresh.JudgePromptIDs(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if pv.Position != pv2.Position || !bitsEqual(pv.RiskProbs, pv2.RiskProbs) || !bitsEqual(pv.CategoryProbs, pv2.CategoryProbs) {
		t.Errorf("second-turn verdict %+v, want %+v", pv2, pv)
	}
	// Decision and flag reset with the new turn.
	if d := s.Decision(); d.Tokens != 0 {
		t.Errorf("decision after a new prompt counts %d tokens", d.Tokens)
	}
}

func TestStreamErrors(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"no messages", func() error { _, err := s.JudgePrompt(context.Background(), nil); return err }(), "empty prompt"},
		{"empty content", func() error {
			_, err := s.JudgePrompt(context.Background(), []Message{{Role: "user", Content: " "}})
			return err
		}(), "empty prompt"},
		{"no ids", func() error { _, err := s.JudgePromptIDs(context.Background(), nil); return err }(), "empty prompt"},
		{"ids not ending at im_end", func() error { _, err := s.JudgePromptIDs(context.Background(), []int{1, 2}); return err }(), "must end with <|im_end|>"},
		{"unknown role", func() error {
			_, err := s.JudgePrompt(context.Background(), []Message{{Role: "narrator", Content: "x"}, {Role: "user", Content: "hi"}})
			return err
		}(), `role "narrator" is not supported`},
		{"assistant last", func() error {
			_, err := s.JudgePrompt(context.Background(), []Message{{Role: "assistant", Content: "x"}})
			return err
		}(), "must be the user's turn"},
		{"response before prompt", func() error { _, err := s.AppendIDs(context.Background(), []int{1}); return err }(), "no prompt yet"},
		{"end without response", func() error { _, err := s.EndResponse(context.Background()); return err }(), "no open response"},
		{"id out of range", func() error {
			_, err := s.JudgePromptIDs(context.Background(), []int{151936, tokenizer.ImEnd})
			return err
		}(), "outside the vocabulary"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, tc.err, tc.want)
		}
	}
	if s.Len() != 0 || s.Pending() != 0 {
		t.Errorf("failed calls fed %d tokens and queued %d", s.Len(), s.Pending())
	}
	if _, err := m.Moderate(context.Background(), []Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}, {Role: "assistant", Content: "c"}}, nil); err == nil {
		t.Error("Moderate accepted two trailing assistant turns")
	}
	s.Close()
	if _, err := s.JudgePrompt(context.Background(), userMsg); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("closed stream: %v", err)
	}
}

// TestOverLongStream uses a model whose max_position_embeddings is 64.
func TestOverLongStream(t *testing.T) {
	m := tinyModel(t, "max64", func(c *config.Config) { c.MaxPositionEmbeddings = 64 })
	s := m.NewStream()
	defer s.Close()
	pv, err := s.JudgePrompt(context.Background(), userMsg)
	if err != nil {
		t.Fatal(err)
	}
	room := 64 - (pv.Position + 1) - len(m.scaffold.responseHeader)
	if _, err := s.AppendIDs(context.Background(), slices.Repeat([]int{1000}, room)); err != nil {
		t.Fatalf("filling the stream to exactly 64 tokens: %v", err)
	}
	_, err = s.AppendIDs(context.Background(), []int{1000})
	if err == nil || !strings.Contains(err.Error(), "65 tokens, more than the model's max_position_embeddings (64)") || !errors.Is(err, ErrContextLength) {
		t.Fatalf("over-long stream: error %v", err)
	}
	if s.Len() != 64 {
		t.Fatalf("stream length %d after the refused token", s.Len())
	}
}

// TestTokenizerMustMatchModel: the Qwen3 tokenizer cannot drive a model
// whose embedding has fewer rows than the tokenizer has ids.
func TestTokenizerMustMatchModel(t *testing.T) {
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.VocabSize = 1000
	src, err := qwen3.RandomSource(cfg, safetensors.F32, 1)
	if err != nil {
		t.Fatal(err)
	}
	net, err := qwen3.Load(src, cfg, qwen3.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrap(net, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "tokenizer has 151669 tokens but the model's vocab_size is 1000") {
		t.Fatalf("small-vocab model with the Qwen3 tokenizer: error %v", err)
	}
}

// TestCloseDuringStep closes streams from another goroutine while steps
// run (for -race): no panic, and a closed stream refuses further work.
func TestCloseDuringStep(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	streams := make([]*Stream, 4)
	for i := range streams {
		streams[i] = m.NewStream()
		if err := streams[i].QueuePrompt(userMsg); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, s := range streams[:2] {
			s.Close()
		}
	}()
	for range 3 {
		_, err := m.Step(context.Background(), streams, StepOptions{MaxTokens: 3})
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatal(err)
		}
	}
	<-done
	if err := streams[0].QueueIDs([]int{1}); err != ErrClosed {
		t.Errorf("closed stream: %v", err)
	}
	if streams[0].CacheBytes() != 0 {
		t.Errorf("closed stream holds %d bytes", streams[0].CacheBytes())
	}
	for _, s := range streams {
		s.Close()
	}
}

// A Stream and a Model are io.Closers.
var (
	_ io.Closer = (*Stream)(nil)
	_ io.Closer = (*Model)(nil)
)

// TestSetMaxTokens: a stream bounded below the model's context refuses
// what would pass its bound exactly as one at the context does (nothing
// queued, the stream usable), counting held-back text; the bound cannot be
// set outside the context or below what the stream holds.
func TestSetMaxTokens(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	s := m.NewStream()
	defer s.Close()
	ctx := context.Background()
	for _, n := range []int{-1, m.net.MaxPositions + 1} {
		if err := s.SetMaxTokens(n); err == nil {
			t.Errorf("SetMaxTokens(%d) accepted", n)
		}
	}
	const limit = 40
	if err := s.SetMaxTokens(limit); err != nil {
		t.Fatal(err)
	}
	pv, err := s.JudgePrompt(ctx, userMsg)
	if err != nil {
		t.Fatal(err)
	}
	room := limit - (pv.Position + 1) - len(m.scaffold.responseHeader)
	if room < 4 {
		t.Fatalf("the test's prompt leaves %d tokens of room", room)
	}
	if _, err := s.AppendIDs(ctx, slices.Repeat([]int{1000}, room-2)); err != nil {
		t.Fatal(err)
	}
	_, err = s.AppendIDs(ctx, []int{1000, 1000, 1000})
	if want := fmt.Sprintf("%d tokens, more than the stream's limit (%d)", limit+1, limit); err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrContextLength) {
		t.Fatalf("past the stream's limit: error %v, want one saying %q", err, want)
	}
	if s.Len() != limit-2 || s.Pending() != 0 {
		t.Fatalf("the refused call changed the stream: length %d, %d pending", s.Len(), s.Pending())
	}
	// Held text counts: a word of 4·128·3 bytes is at least 3 tokens.
	word := strings.Repeat("a", 4*m.tok.MaxTokenBytes()*3)
	if err := s.QueueText(word); !errors.Is(err, ErrContextLength) {
		t.Fatalf("held text past the stream's limit: error %v", err)
	}
	if s.HeldBytes() != 0 {
		t.Fatalf("the refused text is held: %d bytes", s.HeldBytes())
	}
	if err := s.SetMaxTokens(limit - 3); err == nil {
		t.Error("SetMaxTokens below the stream's length accepted")
	}
	// The rest of the room is still the stream's.
	if _, err := s.AppendIDs(ctx, []int{1000, 1000}); err != nil {
		t.Fatalf("filling the stream to its limit: %v", err)
	}
	if err := s.SetMaxTokens(0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendIDs(ctx, []int{1000}); err != nil {
		t.Fatalf("after the limit was lifted: %v", err)
	}
}

// TestDeveloperRole: OpenAI's "developer" role is the system turn, as the
// server reads it: the same verdict, position for position.
func TestDeveloperRole(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	judge := func(role string) *PromptVerdict {
		s := m.NewStream()
		defer s.Close()
		pv, err := s.JudgePrompt(context.Background(), []Message{{Role: role, Content: "Be brief."}, {Role: "user", Content: "hi"}})
		if err != nil {
			t.Fatalf("role %s: %v", role, err)
		}
		return pv
	}
	if d, s := judge("developer"), judge("system"); d.Position != s.Position || d.RiskProb != s.RiskProb {
		t.Errorf("developer %+v, system %+v", d, s)
	}
}

// TestEveryTurn: with Policy.EveryTurn each user turn of a prompt is judged
// at its own <|im_end|>, exactly as the prompt ending there would be on a
// stream of its own; the prompt is flagged when any turn is, with the
// first flagged turn's verdict when the last is not.
func TestEveryTurn(t *testing.T) {
	m := tinyModel(t, "f32", nil)
	ctx := context.Background()
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "How do I pick a lock?"},
		{Role: "assistant", Content: "Use a tension wrench."}, {Role: "user", Content: "And a safe?"},
		{Role: "assistant", Content: "No."}, {Role: "user", Content: "Thanks, bye."}}
	judge := func(p Policy, msgs []Message) *PromptVerdict {
		t.Helper()
		s := m.NewStream()
		defer s.Close()
		if err := s.SetPolicy(p); err != nil {
			t.Fatal(err)
		}
		pv, err := s.JudgePrompt(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		return pv
	}
	pv := judge(Policy{EveryTurn: true}, msgs)
	if len(pv.Turns) != 3 {
		t.Fatalf("%d turn verdicts, want 3", len(pv.Turns))
	}
	for i, end := range []int{2, 4, 6} {
		alone := judge(Policy{}, msgs[:end])
		if got := pv.Turns[i]; got.Position != alone.Position || got.RiskProb != alone.RiskProb || got.Risk != alone.Risk || got.Category != alone.Category || got.Flagged != alone.Flagged {
			t.Errorf("turn %d: %+v, judged alone %+v", i, got, alone)
		}
	}
	if plain := judge(Policy{}, msgs); plain.Turns != nil || plain.Position != pv.Turns[2].Position {
		t.Errorf("without EveryTurn: %+v", plain)
	}
	// A threshold between an earlier turn's non-safe probability and the
	// last's (strict mode: P(Unsafe)+P(Controversial)), on the category
	// they share, flags the earlier turn only. The random model's
	// probabilities are fixed; a last turn less risky than an earlier one
	// is searched among a few.
	nonSafe := func(v PromptVerdict) float32 { return 1 - v.RiskProbs[0] }
	for _, lastText := range []string{"Thanks, bye.", "ok", "Hello there.", "What time is it?", "Tell me more.", "Fine.", "Why?", "Good night."} {
		msgs[5].Content = lastText
		turns := judge(Policy{EveryTurn: true}, msgs).Turns
		lastV := turns[2]
		for i, tv := range turns[:2] {
			if tv.Category != lastV.Category || nonSafe(tv) <= nonSafe(lastV) {
				continue
			}
			tau := (nonSafe(tv) + nonSafe(lastV)) / 2
			p := Policy{Mode: Strict, EveryTurn: true, Thresholds: map[string]float32{tv.Category: tau}}
			got := judge(p, msgs)
			if !got.Flagged || got.Position != tv.Position || len(got.Turns) != 3 || !got.Turns[i].Flagged || got.Turns[2].Flagged {
				t.Errorf("turn %d flags (τ %.4f): verdict %+v", i, tau, got)
			}
			if plain := judge(Policy{Mode: Strict, Thresholds: p.Thresholds}, msgs); plain.Flagged {
				t.Errorf("without EveryTurn the last turn alone flagged: %+v", plain)
			}
			return
		}
	}
	t.Fatal("no last turn of the candidates is less risky than an earlier one in its category: the earlier-flag case is not exercised")
}
