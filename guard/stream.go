package guard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// scaffold holds the ids the stream writes itself, rendered once per model
// by the tokenizer's chat scaffold (tokenizer.ResponseHeader, TurnEnd).
type scaffold struct {
	responseHeader []int // "\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
	thinkingHeader []int // "\n<|im_start|>assistant\n<think>\n"
	turnEnd        []int // "<|im_end|>\n"
	newline        []int // "\n" after a user turn's <|im_end|>
	userRole       int   // "user" after <|im_start|>: a user turn begins
}

func newScaffold(tok *tokenizer.Tokenizer) (scaffold, error) {
	var sc scaffold
	var err error
	if sc.responseHeader, err = tok.ResponseHeader(false); err != nil {
		return sc, err
	}
	if sc.thinkingHeader, err = tok.ResponseHeader(true); err != nil {
		return sc, err
	}
	if sc.turnEnd, err = tok.TurnEnd(); err != nil {
		return sc, err
	}
	sc.newline = sc.turnEnd[1:]
	// The template writes "user\n" and the turn's text as one run of
	// text; "user" is a word of its own to the pre-tokenizer, so one id.
	if ids := tok.EncodeText("user"); len(ids) == 1 {
		sc.userRole = ids[0]
	} else {
		return sc, fmt.Errorf("the tokenizer writes the role \"user\" as %d tokens, not one", len(ids))
	}
	return sc, nil
}

// phase is where the queued token sequence ends.
type phase int

const (
	phaseFresh    phase = iota // nothing queued yet
	phasePrompt                // after a user turn's <|im_end|>
	phaseResponse              // inside an assistant turn
	phaseThinking              // inside an assistant turn's open think block
	phaseTurnEnd               // after an assistant turn's "<|im_end|>\n"
)

type itemKind uint8

const (
	itemContext   itemKind = iota // prompt tokens: fed, no verdict
	itemPromptEnd                 // <|im_end|> of a user turn: query heads
	itemTurnEnd                   // an earlier user turn's, with Policy.EveryTurn
	itemScaffold                  // assistant-turn token fed but not judged
	itemResponse                  // judged with the response heads
)

// item is one queued token.
type item struct {
	id    int
	kind  itemKind
	begin bool // first token of an assistant turn: reset the response state
	text  string
}

// Stream is one conversation's state: its KV cache, the tokens queued for
// the next forward, and the policy state of the current response. Streams
// come from Model.NewStream: the zero Stream is not usable, and its
// methods return errors (or zero values).
type Stream struct {
	m      *Model
	mu     sync.Mutex
	cache  kvCache
	policy Policy
	queue  []item
	phase  phase
	enc    *tokenizer.StreamEncoder
	dec    *tokenizer.StreamDecoder

	resp       responseState
	lastPrompt *PromptVerdict
	turns      int
	inStep     bool
	closed     bool
	// fed and cacheBytes are the cache's length and memory as of the
	// last step's end: while a step runs, its forward changes the cache
	// without the lock, and the calls allowed meanwhile (queueing, Len,
	// CacheBytes) read these instead.
	fed        int
	cacheBytes int64
	// limit is the most tokens the stream may hold (SetMaxTokens); 0
	// means the model's max_position_embeddings.
	limit int
	// held is heldIDs' last count; encGen names the encoder's text (a
	// write makes a new one, from gens; undo restores the name), written
	// counts the raw bytes written to it; refused is the last count that
	// did not fit (undo keeps it).
	held                  heldCount
	encGen, gens, written int
	chunk                 string // the last write's text
	refused               heldRefused
	sv                    saved // scratch of save and undo
	// earlier are the verdicts of the prompt's earlier user turns
	// (Policy.EveryTurn) until its last turn's is read.
	earlier []PromptVerdict
	// calls holds one token while a synchronous call (JudgePrompt,
	// AppendText, ...) queues and runs: two such calls on one stream take
	// turns, so each returns the verdicts of its own input.
	calls chan struct{}
	// prompt is the ids the last QueuePromptIDs queued (without the
	// scaffold before them), kept until its <|im_end|> is fed: a
	// JudgePrompt retried after a cancelled one, with the same prompt,
	// finishes it instead of queueing it again.
	prompt []int
	// err is why a stream from an unusable model takes no work.
	err error
}

// ErrClosed is returned by operations on a closed stream.
var ErrClosed = errors.New("guard: stream is closed")

// ErrNotTaken is wrapped, beside the context's error, by a synchronous
// call whose context ended while it waited for another call on the same
// stream: it took nothing, and its input is to be sent again.
var ErrNotTaken = errors.New("guard: the call took nothing")

// errZeroStream is the error of a zero Stream's calls.
var errZeroStream = errors.New("guard: the stream is not open: a zero Stream is not usable; streams come from Model.NewStream")

// check is nil, or why the stream can take no work: closed, a zero
// Stream, or its model not loaded or closed (ErrModelClosed: the queued
// tokens could never be fed). Callers hold s.mu.
func (s *Stream) check() error {
	switch {
	case s.closed:
		return ErrClosed
	case s.err != nil:
		return s.err
	case s.m == nil:
		return errZeroStream
	}
	return s.m.usable()
}

// ErrContextLength is wrapped by the error of an operation that would take a
// stream past the model's context (max_position_embeddings) or the bound
// set by [Stream.SetMaxTokens]. The input is the caller's to shorten:
// nothing was queued.
var ErrContextLength = errors.New("guard: context length exceeded")

// NewStream starts a conversation with the model's default policy. Its
// cache memory grows with use; Close releases it. On a closed (or zero)
// model it returns a stream whose every call that would queue or run fails
// with that model's error (ErrModelClosed).
func (m *Model) NewStream() *Stream {
	if err := m.usable(); err != nil {
		// No cache, encoder or decoder: check refuses every call that
		// would use them (with the model's error, a nil Model's
		// included), and the others read none of them.
		return &Stream{m: m, resp: newResponseState(), err: err}
	}
	return &Stream{
		m: m, cache: m.eng.newCache(), policy: m.policy, resp: newResponseState(),
		enc: m.tok.NewTextStreamEncoder(), dec: m.tok.NewStreamDecoder(false),
		calls: make(chan struct{}, 1),
	}
}

// enter waits for the stream's other synchronous calls to end (or ctx);
// leave, after a nil error, lets the next one in.
func (s *Stream) enter(ctx context.Context) error {
	if s.calls == nil { // a zero Stream, or an unusable model's: the call fails on its own
		return nil
	}
	// A free stream is entered whatever the context: the call then takes
	// its input, and its run stops at the context (doc.go, Cancellation).
	// Chosen at random between the two, a call on a done context took
	// its input or not by chance.
	select {
	case s.calls <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.calls <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: its context ended while another call on the stream ran: %w", ErrNotTaken, ctx.Err())
	}
}

func (s *Stream) leave() {
	if s.calls != nil {
		<-s.calls
	}
}

// SetPolicy replaces the stream's policy for tokens judged from now on.
// The stream keeps a copy: later edits of p's map or slice do not reach
// it.
func (s *Stream) SetPolicy(p Policy) error {
	if s.m == nil {
		return errZeroStream
	}
	if s.m.net == nil {
		return errNotLoaded
	}
	l := s.m.net.Labels
	p = p.clone() // what is checked is what is kept
	if err := p.check(l.ResponseCategory, l.QueryCategory); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
	return nil
}

// SetMaxTokens bounds the stream's length to n tokens, fewer than the
// model's max_position_embeddings allows (n = 0 restores that bound). An
// operation that would take the stream past it, counting held-back text
// as its fewest tokens, fails as one past the context does: with an error
// wrapping ErrContextLength, nothing queued. A server sets it to cap what
// one conversation may cost; it fails when n is negative, above the
// model's context, or below what the stream already holds (its held-back
// text counted as the tokens flushing it now would make).
func (s *Stream) SetMaxTokens(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		return errZeroStream
	}
	if s.m.net == nil {
		return errNotLoaded
	}
	if max := s.m.net.MaxPositions; n < 0 || n > max {
		return fmt.Errorf("guard: stream limit %d outside [0, %d], the model's max_position_embeddings", n, max)
	}
	held := s.fed + len(s.queue)
	if s.enc != nil && s.enc.Held() > 0 {
		// Text held back is tokens to come: as many as flushing it now
		// makes, so that a bound set here leaves FlushText room.
		var e tokenizer.StreamEncoder
		s.enc.CopyTo(&e)
		held += len(e.Flush())
	}
	if n > 0 && held > n {
		return fmt.Errorf("guard: stream limit %d below the %d tokens the stream holds", n, held)
	}
	s.limit = n
	return nil
}

// maxTokens is the stream's length bound and what sets it, for errors.
func (s *Stream) maxTokens() (int, string) {
	if s.limit > 0 {
		return s.limit, "the stream's limit"
	}
	return s.m.net.MaxPositions, "the model's max_position_embeddings"
}

// Close releases the cache. It is safe to call more than once; a stream
// being stepped is released when the step ends. It returns nil: the error
// is there so that a Stream is an io.Closer.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.queue = nil
	if !s.inStep && s.cache != nil {
		// Safe after the model's Close: a cache is the stream's own
		// memory, or (on a GPU) bookkeeping of the engine's pool.
		s.cache.Release()
		s.fed = 0
	}
	return nil
}

// Len is the number of tokens fed so far; Pending the number queued.
func (s *Stream) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fed
}

// HeldBytes is the number of bytes of response text AppendText or
// QueueText took that are not tokens yet: the end of the text, held back
// until later text or the response's end decides how it encodes. A
// stream refuses text (ErrContextLength) once what it holds can no longer
// fit its context.
func (s *Stream) HeldBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enc == nil {
		return 0
	}
	return s.enc.Held()
}

// Pending is the number of tokens queued for the next step.
func (s *Stream) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// CacheBytes is the KV-cache memory the stream holds (as of the last
// step's end while a step runs).
func (s *Stream) CacheBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inStep {
		return s.cacheBytes
	}
	if s.cache == nil {
		return 0
	}
	return s.cache.Bytes()
}

// Flagged reports the response token index at which the current response
// was flagged (the token completing a run of Debounce non-safe tokens).
func (s *Stream) Flagged() (index int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil { // a zero Stream's response state is not a fresh one's
		return -1, false
	}
	return s.resp.flaggedAt, s.resp.flaggedAt >= 0
}

// Decision applies the official final rule to the current response's
// tokens judged so far.
func (s *Stream) Decision() Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		r := newResponseState()
		return r.decision(&s.policy)
	}
	return s.resp.decision(&s.policy)
}

// LastPrompt is the verdict on the most recent user turn (nil before one).
func (s *Stream) LastPrompt() *PromptVerdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPrompt
}

// push queues items atomically after checking the stream can take them.
func (s *Stream) push(items []item) error {
	if err := s.check(); err != nil {
		return err
	}
	vocab := s.m.net.VocabSize()
	for _, it := range items {
		if it.id < 0 || it.id >= vocab {
			return fmt.Errorf("guard: token id %d outside the vocabulary [0, %d)", it.id, vocab)
		}
	}
	max, what := s.maxTokens()
	n := s.fed + len(s.queue) + len(items)
	if n > max {
		return fmt.Errorf("%w: the stream would reach %d tokens, more than %s (%d); start a new stream", ErrContextLength, n, what, max)
	}
	// Text the encoder holds back (a word that may still grow) is tokens
	// to come: held text that would not fit if the text ended now is
	// refused, so that FlushText and EndResponse always find room.
	if held := s.enc.Held(); held > 0 {
		if ids, how := s.heldIDs(n, held, max-n); n+ids > max {
			return &heldOverrun{fmt.Sprintf("%v: the stream holds %d bytes of text not yet tokenized (one word that may still grow), %s%d tokens, beside %d; %s is %d", ErrContextLength, held, how, ids, n, what, max)}
		}
	}
	s.queue = append(s.queue, items...)
	return nil
}

// heldOverrun is the ErrContextLength of text that the stream would only
// hold back (a word still growing) and that would not fit: refused like
// any, but no text was lost to the guard's judging — what a stream took is
// whole, so a server may keep it (guardhook.HeldOverrun).
type heldOverrun struct{ msg string }

func (e *heldOverrun) Error() string { return e.msg }
func (e *heldOverrun) Unwrap() error { return ErrContextLength }

// heldCount is an exact count of the ids of the encoder's held text (what
// flushing it would make): the encoder's write gen then, the ids before the
// held text, the raw bytes written to the encoder so far, and the ids.
type heldCount struct{ gen, before, written, ids int }

// heldRefused is an exact count that did not fit: of the text chunk
// written on the encoder's text base (its gen before the refused write),
// with room ids of room.
type heldRefused struct {
	base, room, ids int
	chunk           string
}

// heldSlack is what heldIDs adds to the bound on a grown word for its
// earlier part: BPE is not local (" NONINFRINGEMENT" is one id,
// " NONINFRINGEMENTh" six), so new bytes can re-split the word's end.
const heldSlack = 16

// heldExact is the held text, in bytes, above which a word whose last
// count leaves at most 2×heldSlack of room is refused on the bound,
// without counting it again.
const heldExact = 1 << 10

// heldIDs returns the ids the encoder's held bytes (held, with before ids
// ahead of them) make if the text ends now, or a bound on them that settles
// the check against room (how says which: "" exact, "at least ", "up to "):
// the fewest those bytes can make, already over room; the most, within it;
// or, for the word last counted grown since, its count plus the most ids
// the raw bytes written since make plus heldSlack, within it. Otherwise the
// held text is counted, a BPE of what may be one long word — except near
// the bound, where appends to a long word (held > heldExact) whose count
// leaves at most 2×heldSlack of room are refused on the bound, and the
// same chunk written again on a base a count refused it on, with no more
// room, is refused on that count: a client repeating an append at the
// bound does not cost a BPE of the word each time.
func (s *Stream) heldIDs(before, held, room int) (int, string) {
	if least := s.m.tok.MinIDs(held); least > room {
		return least, "at least "
	}
	if most := held * tokenizer.MaxIDsPerByte; most <= room {
		return most, "up to "
	}
	c := s.held
	if c.gen == s.encGen {
		return c.ids, ""
	}
	if r := s.refused; r.base == s.sv.encGen && room <= r.room && r.chunk == s.chunk {
		return r.ids, "" // the same text: its count
	}
	if c.gen != 0 && c.before == before && s.written >= c.written {
		// Raw bytes, as written: NFC only shortens what the encoder
		// holds unlooked-at, which HeldBytes would count before and not
		// after.
		most := c.ids + (s.written-c.written)*tokenizer.MaxIDsPerByte + heldSlack
		if most <= room || held > heldExact && room-c.ids <= 2*heldSlack {
			return most, "up to "
		}
	}
	var e tokenizer.StreamEncoder
	s.enc.CopyTo(&e)
	s.held = heldCount{gen: s.encGen, before: before, written: s.written, ids: len(e.Flush())}
	if s.held.ids > room {
		s.refused = heldRefused{base: s.sv.encGen, room: room, ids: s.held.ids, chunk: s.chunk}
	}
	return s.held.ids, ""
}

// write writes text to the encoder; every write starts a new text for
// heldIDs' count.
func (s *Stream) write(text string) []int {
	s.gens++
	s.encGen = s.gens
	s.written += len(text)
	s.chunk = text // kept, not copied: compared only after a refusal
	return s.enc.Write(text)
}

func contextItems(ids []int, kind itemKind) []item {
	items := make([]item, len(ids))
	for i, id := range ids {
		items[i] = item{id: id, kind: kind}
	}
	return items
}

// assistantItems decodes ids for display and tags them.
func (s *Stream) assistantItems(ids []int, kind itemKind) []item {
	items := make([]item, len(ids))
	for i, id := range ids {
		items[i] = item{id: id, kind: kind, text: s.dec.Add(id)}
	}
	return items
}

// saved is what a queueing call changes before it knows whether the
// stream takes its tokens: a refused call (ErrContextLength, an id outside
// the vocabulary) restores it, so nothing was queued and no held-back text
// is lost.
// The copy lives in the stream and reuses its memory: every chunk of a
// streamed response is queued through here.
type saved struct {
	enc     tokenizer.StreamEncoder
	dec     tokenizer.StreamDecoder
	phase   phase
	queued  int
	encGen  int
	written int
	held    heldCount
}

func (s *Stream) save() {
	s.enc.CopyTo(&s.sv.enc)
	s.dec.CopyTo(&s.sv.dec)
	s.sv.phase, s.sv.queued = s.phase, len(s.queue)
	s.sv.encGen, s.sv.written, s.sv.held = s.encGen, s.written, s.held
}

// undo restores what save saved when err is not nil, and returns err.
// The count of the restored text comes back too, so that calls refused
// at the bound do not count the held text again each time.
func (s *Stream) undo(err error) error {
	if err != nil {
		s.sv.enc.CopyTo(s.enc)
		s.sv.dec.CopyTo(s.dec)
		s.phase = s.sv.phase
		s.queue = s.queue[:s.sv.queued:s.sv.queued]
		s.encGen, s.written, s.held = s.sv.encGen, s.sv.written, s.sv.held
	}
	return err
}

// closeTurn returns the tokens that must precede a new user turn.
func (s *Stream) closeTurn() []item {
	switch s.phase {
	case phasePrompt:
		return contextItems(s.m.scaffold.newline, itemContext)
	case phaseResponse, phaseThinking:
		items := s.assistantItems(s.enc.Flush(), itemResponse)
		return append(items, s.assistantItems(s.m.scaffold.turnEnd, itemScaffold)...)
	}
	return nil
}

// QueuePrompt queues a user turn (with any system or earlier turns in msgs)
// rendered by the Qwen3 chat template, up to and including the <|im_end|>
// that closes the last user turn, where the prompt verdict is read. The last
// message must be the user's. On a stream that already holds a
// conversation, msgs continue it (an open response is ended first).
func (s *Stream) QueuePrompt(msgs []Message) error {
	ids, err := s.renderPrompt(msgs)
	if err != nil {
		return err
	}
	return s.QueuePromptIDs(ids)
}

// renderPrompt is the ids of a user turn, as QueuePrompt queues them.
func (s *Stream) renderPrompt(msgs []Message) ([]int, error) {
	if len(msgs) == 0 {
		return nil, errors.New("guard: empty prompt: no messages")
	}
	if last := msgs[len(msgs)-1]; last.Role != "user" && last.Role != "tool" {
		return nil, fmt.Errorf("guard: the last message must be the user's turn (or tool results, which the chat template writes as one), got role %q (feed a response with AppendText or AppendIDs)", last.Role)
	}
	s.mu.Lock()
	err := s.check()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c, err := s.m.tok.RenderConversation(chatMessages(msgs))
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	return c.Prompt(), nil
}

// markTurnEnds marks, in a prompt's items before its last <|im_end|>, the
// <|im_end|> that closes each user turn: "<|im_start|>user" begins one
// (added tokens never come from text, so these are the scaffold's own),
// and the next <|im_end|> closes it.
func (s *Stream) markTurnEnds(items []item) {
	inUser := false
	for i, it := range items {
		switch {
		case it.id == tokenizer.ImStart:
			inUser = i+1 < len(items) && items[i+1].id == s.m.scaffold.userRole
		case it.id == tokenizer.ImEnd && inUser:
			items[i].kind = itemTurnEnd
			inUser = false
		}
	}
}

// QueuePromptIDs queues an already tokenized prompt; its last id must be
// the <|im_end|> closing the user turn.
func (s *Stream) QueuePromptIDs(ids []int) error {
	if err := checkPromptIDs(ids); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	s.save()
	items := s.closeTurn()
	n := len(items)
	items = append(items, contextItems(ids[:len(ids)-1], itemContext)...)
	s.markTurnEnds(items[n:]) // judged when the policy asks (EveryTurn) as they are fed
	items = append(items, item{id: tokenizer.ImEnd, kind: itemPromptEnd})
	if err := s.push(items); err != nil {
		return s.undo(err)
	}
	s.phase = phasePrompt
	s.prompt = append(s.prompt[:0], ids...)
	return nil
}

// checkPromptIDs is why ids are not a prompt: none, or not ending with
// the <|im_end|> where the verdict is read.
func checkPromptIDs(ids []int) error {
	if len(ids) == 0 {
		return errors.New("guard: empty prompt: no token ids")
	}
	if ids[len(ids)-1] != tokenizer.ImEnd {
		return fmt.Errorf("guard: prompt ids must end with <|im_end|> (%d), where the prompt verdict is read; got %d", tokenizer.ImEnd, ids[len(ids)-1])
	}
	return nil
}

// promptQueued reports whether a prompt's <|im_end|> is queued, not yet
// fed: a call that fed it was cancelled (or failed) first. Callers hold
// s.mu.
func (s *Stream) promptQueued() bool {
	return slices.ContainsFunc(s.queue, func(it item) bool { return it.kind == itemPromptEnd })
}

// StartResponse queues the assistant header. With thinking false it is
// followed by an empty think block (the model's non-thinking form) and
// nothing of it is judged; with thinking true the think block is left open
// and the tokens that follow (the reasoning) are judged. AppendIDs and
// AppendText call StartResponse(false) when no response is open.
func (s *Stream) StartResponse(thinking bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	s.save()
	return s.undo(s.startResponse(thinking))
}

func (s *Stream) startResponse(thinking bool) error {
	switch s.phase {
	case phaseFresh:
		return errors.New("guard: no prompt yet: judge the user's turn before its response")
	case phaseResponse, phaseThinking:
		return errors.New("guard: a response is already open")
	case phaseTurnEnd:
		return errors.New("guard: the previous response ended; judge the next user turn first")
	}
	hdr, ph := s.m.scaffold.responseHeader, phaseResponse
	if thinking {
		hdr, ph = s.m.scaffold.thinkingHeader, phaseThinking
	}
	items := s.assistantItems(hdr, itemScaffold)
	items[0].begin = true
	if err := s.push(items); err != nil {
		return err
	}
	s.phase = ph
	return nil
}

func (s *Stream) ensureResponse() error {
	if s.phase == phaseResponse || s.phase == phaseThinking {
		return nil
	}
	return s.startResponse(false)
}

// QueueIDs queues response tokens, after any text QueueText held back
// (that text ends where the ids begin).
func (s *Stream) QueueIDs(ids []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueIDs(ids)
}

// queueIDs is QueueIDs; callers hold s.mu.
func (s *Stream) queueIDs(ids []int) error {
	if err := s.check(); err != nil {
		return err
	}
	s.save()
	if err := s.ensureResponse(); err != nil {
		return s.undo(err)
	}
	items := s.assistantItems(s.enc.Flush(), itemResponse)
	return s.undo(s.push(append(items, s.assistantItems(ids, itemResponse)...)))
}

// QueueText queues response text. It is re-tokenized incrementally: ids are
// queued once no later text can change them, so the tokens of a chunk may
// be judged with a later chunk; QueueFlushText ends the text. Text is taken
// as given: the chat template drops an answer's (and reasoning's) leading
// newlines, so a caller judging text the template will lay out drops them
// too, as streamguard's server and proxy do. An error
// (the stream would exceed max_position_embeddings) queues nothing: the
// text is not taken.
func (s *Stream) QueueText(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	s.save()
	if err := s.ensureResponse(); err != nil {
		return s.undo(err)
	}
	return s.undo(s.push(s.assistantItems(s.write(text), itemResponse)))
}

// QueueFlushText queues the tokens QueueText held back.
func (s *Stream) QueueFlushText() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if s.phase != phaseResponse && s.phase != phaseThinking {
		return nil
	}
	s.save()
	return s.undo(s.push(s.assistantItems(s.enc.Flush(), itemResponse)))
}

// QueueEndThinking closes the think block that StartResponse(true) opened,
// as the chat template writes it after the reasoning: "\n", </think>, then
// "\n\n", which begins the answer's text. All of it is judged, like the
// reasoning and the answer. The reasoning's trailing newlines and the
// answer's leading ones are the caller's to drop, as the template does.
// Text can never close the block: a "</think>" in it is text.
func (s *Stream) QueueEndThinking() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if s.phase != phaseThinking {
		return errors.New("guard: no open think block to end (StartResponse(true) opens one)")
	}
	// The reasoning and its "\n" are one text; the answer starts another,
	// its first "\n\n" held until the answer's first text decides how it
	// encodes.
	s.save()
	rest := s.write("\n")
	rest = append(rest, s.enc.Flush()...)
	items := s.assistantItems(rest, itemResponse)
	items = append(items, s.assistantItems([]int{tokenizer.ThinkEnd}, itemResponse)...)
	if err := s.push(items); err != nil {
		return s.undo(err)
	}
	s.phase = phaseResponse
	// The answer's "\n\n" is held, and must fit as held text does.
	return s.undo(s.push(s.assistantItems(s.write("\n\n"), itemResponse)))
}

// QueueStartToolCall opens a tool call of the answer: the text held back
// so far is queued (the call's tag ends it, as the tag ends the template's
// text), then <tool_call> as the model's token for it, judged like the
// answer. The answer is opened first if it is not (StartResponse(false));
// an open think block must be closed first (EndThinking), as the template
// writes calls after the reasoning. What the template writes around and
// inside a call is the caller's to append as text, as the answer's text is:
// "\n" before a call that follows content or another call, then
// "\n{\"name\": \"NAME\", \"arguments\": ARGUMENTS}\n" inside it, which
// QueueEndToolCall closes.
func (s *Stream) QueueStartToolCall() error { return s.queueToolTag(tokenizer.ToolCallStart) }

// QueueEndToolCall closes a tool call QueueStartToolCall opened with
// </tool_call>, after the text held back so far.
func (s *Stream) QueueEndToolCall() error { return s.queueToolTag(tokenizer.ToolCallEnd) }

func (s *Stream) queueToolTag(id int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if s.phase == phaseThinking {
		return errors.New("guard: a tool call inside the think block (EndThinking closes it first)")
	}
	return s.queueIDs([]int{id})
}

// QueueEndResponse flushes the text and closes the assistant turn with
// "<|im_end|>\n" (not judged), so that the next user turn can follow.
// Right after a prompt it queues an empty answer, as the chat template
// writes one (an LLM that streamed no text, or only tool calls).
func (s *Stream) QueueEndResponse() error { return s.queueEndResponse(false) }

// queueEndResponse is QueueEndResponse; again is EndResponse called after
// a cancelled one, whose turn end may still be queued: then it queues
// nothing, and the call feeds what is queued.
func (s *Stream) queueEndResponse(again bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if again && s.phase == phaseTurnEnd && len(s.queue) > 0 {
		return nil
	}
	s.save()
	if s.phase == phasePrompt {
		if err := s.startResponse(false); err != nil {
			return s.undo(err)
		}
	}
	if s.phase != phaseResponse && s.phase != phaseThinking {
		return errors.New("guard: no open response to end")
	}
	if err := s.push(s.closeTurn()); err != nil {
		return s.undo(err)
	}
	s.phase = phaseTurnEnd
	return nil
}

// queueConversation queues a conversation laid out by
// tokenizer.RenderConversation: the prompt, and the response's header
// (fed), judged ids and closing "<|im_end|>\n" (fed).
func (s *Stream) queueConversation(c *tokenizer.Conversation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if s.phase != phaseFresh {
		return errors.New("guard: a whole conversation needs a fresh stream")
	}
	items := contextItems(c.IDs[:c.PromptEnd], itemContext)
	s.markTurnEnds(items)
	items = append(items, item{id: c.IDs[c.PromptEnd], kind: itemPromptEnd})
	ph := phasePrompt
	if c.Response {
		a := s.assistantItems(c.Header(), itemScaffold)
		a[0].begin = true
		a = append(a, s.assistantItems(c.Judged(), itemResponse)...)
		a = append(a, s.assistantItems(c.IDs[c.JudgedEnd:], itemScaffold)...)
		items = append(items, a...)
		ph = phaseTurnEnd
	}
	if err := s.push(items); err != nil {
		return err
	}
	s.phase = ph
	return nil
}
