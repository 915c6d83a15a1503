package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestAppendFlushOneOperation: an append with "flush": true is one
// operation with one charge: a 429 kv_budget ("stream intact: retry
// later") means nothing of it was judged. Were the flush charged apart,
// its refusal would come after the ids (or text) were judged, their
// verdicts lost, and a client retrying as told would append them twice.
func TestAppendFlushOneOperation(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	// 512 positions, no wait: charges are refused at once when full.
	h := newHarness(t, Options{Config: twoTenants(nil), KVBudgetBytes: 512 * bpp, StreamReserveTokens: 1, KVBudgetWait: -1})
	// Tenant b's stream (a prompt of ~80 tokens) is charged 256 positions.
	var sb streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-b", map[string]any{"prompt": strings.Repeat("word ", 70)}, &sb); code != 201 {
		t.Fatalf("b: status %d", code)
	}
	// Tenant a's stream (a short prompt plus a reserve of 1): 192.
	var sa streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &sa); code != 201 {
		t.Fatalf("a: status %d", code)
	}
	if used, _ := h.srv.budget.usage(); used != 448 {
		t.Fatalf("charged %d, want 448 (256 + 192)", used)
	}
	// ids that take a's stream to ~125 positions: charged capBound(128)
	// = 256 (fits the 64 left); the flush that follows is charged
	// capBound(125+11) = 320, 64 more than is free.
	p1 := sa.State.Position
	n := 117 - p1
	var e errBody
	code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"ids": slices.Repeat([]int{9707}, n), "flush": true}, &e)
	var st streamResponse
	h.do("GET", "/v1/streams/"+sa.ID, "key-a", nil, &st)
	t.Logf("append+flush: status %d %+v; position before %d, after %d", code, e.Error, p1, st.State.Position)
	if code != 200 && st.State.Position != p1 {
		t.Fatalf("the append was answered %d %s (\"retry later\") but its %d ids were judged: the stream moved from position %d to %d, and their verdicts are not in the answer",
			code, e.Error.Code, n, p1, st.State.Position)
	}
}

// TestKVBudgetHoldsForExpandingText: NFC makes some characters longer
// (U+FB2C, 3 bytes, becomes 6 bytes and 5 ids), so text may give more
// tokens than bytes; a text append is charged an upper bound
// (tokenizer.MaxIDs), so neither the charges nor the caches pass
// --kv-budget ("refused with 429 before anything is allocated"), with
// another tenant holding part of it. An append charged a token a byte,
// the largest that estimate admits, overshot it by ~1.7x.
func TestKVBudgetHoldsForExpandingText(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	const limit = 4096
	h := newHarness(t, Options{Config: twoTenants(nil), KVBudgetBytes: limit * bpp, StreamReserveTokens: 1, KVBudgetWait: -1})
	// Another tenant's stream holds half the budget.
	if code, _ := h.do("POST", "/v1/streams", "key-b", map[string]any{"prompt": strings.Repeat("word ", 1700)}, nil); code != 201 {
		t.Fatalf("b: status %d", code)
	}
	var sa streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &sa); code != 201 {
		t.Fatalf("a: status %d", code)
	}
	used, _ := h.srv.budget.usage()
	free := limit - used
	charged := h.srv.budget.capBound(sa.State.Position + 1) // prompt + reserve
	// The longest text whose estimated charge fits what is free.
	k := 0
	for next := 1; ; next++ {
		text := strings.Repeat("\uFB2C", next) + ". "
		if h.srv.budget.capBound(sa.State.Position+len(text)+headerSlack)-charged > int64(free) {
			break
		}
		k = next
	}
	text := strings.Repeat("\uFB2C", k) + ". "
	var r streamResponse
	code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"text": text}, &r)
	after, lim := h.srv.budget.usage()
	var held int64
	h.srv.sessions.mu.Lock()
	for _, s := range h.srv.sessions.m {
		held += s.c.s.CacheBytes()
	}
	h.srv.sessions.mu.Unlock()
	t.Logf("used %d of %d positions before; append of %d bytes: status %d, %d verdicts, position %d; used %d after; caches hold %d bytes, budget %d",
		used, limit, len(text), code, len(r.Tokens), r.State.Position, after, held, limit*bpp)
	if after > lim || held > limit*bpp {
		t.Fatalf("the KV budget is overshot: %d positions charged of %d, caches hold %d bytes of a %d-byte budget (an append of %d bytes fed %d tokens)",
			after, lim, held, limit*bpp, len(text), r.State.Position-sa.State.Position)
	}
}

// TestDuplexBadLinesRateLimited: every duplex line counts against the
// tenant's rate limit (SERVER.md: "each duplex operation counts"), one that
// is not valid JSON too: a client over its limit cannot have lines of up
// to --max-body parsed and answered without end on one connection.
func TestDuplexBadLinesRateLimited(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.RateLimit = RateConfig{RequestsPerSecond: 0.001, Burst: 2} })})
	d := h.connect("key-a", false) // the connection takes one token
	if rep := d.do(map[string]any{"op": "open", "prompt": "hi"}); rep.Error != nil {
		t.Fatalf("open: %+v", rep.Error) // the second token
	}
	if rep := d.do(map[string]any{"op": "state"}); rep.Error == nil || rep.Error.Code != "rate_limit" {
		t.Fatalf("a well-formed operation over the limit: %+v", rep)
	}
	bad := `{"op": "append", "text": "` + strings.Repeat("x", 64<<10) + `", "ids": [1,}` + "\n"
	answered := 0
	for range 50 {
		if _, err := d.w.Write([]byte(bad)); err != nil {
			t.Fatal(err)
		}
		rep, ok := d.recv()
		if !ok {
			break
		}
		if rep.Error != nil && rep.Error.Code == "rate_limit" {
			break
		}
		answered++
	}
	if answered > 0 {
		t.Fatalf("over its rate limit, the tenant had %d malformed lines of %d KiB parsed and answered (invalid_request), none refused rate_limit", answered, len(bad)>>10)
	}
}

// TestDuplexOpenUnderHeldID: "a resume under an id the tenant holds open on
// this replica is 409 stream_exists", and the duplex connection resumes
// the same way: its open under the id of the tenant's open REST stream is
// refused, rather than a second stream of that id holding its own charge
// and slot.
func TestDuplexOpenUnderHeldID(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	const id = "0123456789abcdef0123456789abcdef"
	rest := h.stream("key-a", id, false)
	if _, err := rest.open(map[string]any{"prompt": "hi"}); err != nil {
		t.Fatal(err)
	}
	// The REST form refuses it, as documented.
	if _, err := h.stream("key-a", id, false).open(map[string]any{"prompt": "hi", "resume": true}); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("REST resume under an open id: %v", err)
	}
	dup := h.stream("key-a", id, true)
	_, err := dup.open(map[string]any{"prompt": "hi", "resume": true})
	tn := h.srv.tenants.list[0]
	open := tn.open.Load()
	if dup.w != nil {
		dup.w.Close()
		dup.body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "stream_exists") {
		t.Fatalf("a duplex resume under the id of the tenant's open stream: %v (the tenant has %d streams named %s)", err, open, id)
	}

	// A duplex connection holds its id while it lives: a REST stream of
	// that id is refused until the connection ends.
	const id2 = "fedcba9876543210fedcba9876543210"
	held := h.stream("key-a", id2, true)
	if _, err := held.open(map[string]any{"prompt": "hi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.stream("key-a", id2, false).open(map[string]any{"prompt": "hi"}); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("a REST stream under a duplex connection's id: %v", err)
	}
	held.w.Close()
	held.body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := h.stream("key-a", id2, false).open(map[string]any{"prompt": "hi"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the id of a closed duplex connection stays held: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAppendWithinReserveFits: "a new stream is charged its prompt plus
// --stream-reserve response tokens up front", so that it does not run into
// a full budget mid-response: an append well within a reserve of 256 fits
// it with the budget otherwise full, in any script. The charge is NFD's
// length (what NFC can at most reach, each id at least a byte of it): 24
// plain words are charged their 120 bytes, 63 CJK characters their 189
// bytes (three positions a byte, as text NFC could make three times
// longer, refused both).
func TestAppendWithinReserveFits(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	tk, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{strings.Repeat("word ", 24), strings.Repeat("今天天气很好。", 9)} {
		h := newHarness(t, Options{Config: twoTenants(nil), KVBudgetBytes: 4096 * bpp, StreamReserveTokens: 256, KVBudgetWait: -1})
		var sa streamResponse
		if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &sa); code != 201 {
			t.Fatalf("open: status %d", code)
		}
		// Every other position of the budget is held (other streams, in
		// production): the stream has its prompt and its reserve, no more.
		used, limit := h.srv.budget.usage()
		h.srv.budget.forceAcquire("t", limit-used)
		var e errBody
		if code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"text": text}, &e); code != 200 {
			t.Errorf("an append of %d bytes (%d tokens; charged %d) to a stream at position %d with a reserve of 256 tokens: status %d %+v",
				len(text), len(tk.EncodeText(text)), tokenizer.MaxIDs(text), sa.State.Position, code, e.Error)
		}
		h.srv.budget.release("t", limit-used)
	}
}

// TestKVBudgetHoldsForHeldText: a flush is charged for the text the
// stream's encoder holds (its own count, each byte as the most NFC makes
// of one): after text that NFC lengthens (U+FB2C, 3 bytes, is 6 after it)
// and a long word held back, a flush with the rest of the budget taken is
// refused or fits, never forced past --kv-budget. (An estimate of the held
// bytes from the verdicts' normalised text fell to 0 there.)
func TestKVBudgetHoldsForHeldText(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	const limit = 8192
	h := newHarness(t, Options{Config: twoTenants(nil), KVBudgetBytes: limit * bpp, StreamReserveTokens: 1, KVBudgetWait: -1})
	var sa streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &sa); code != 201 {
		t.Fatalf("open: status %d", code)
	}
	const n = 400
	text := strings.Repeat("\uFB2C", n) + " " + strings.Repeat("x", 3*n-1)
	var r1 streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"text": text}, &r1); code != 200 {
		t.Fatalf("append: status %d", code)
	}
	h.srv.sessions.mu.Lock()
	var held int
	for _, s := range h.srv.sessions.m {
		held = s.c.s.HeldBytes()
	}
	h.srv.sessions.mu.Unlock()
	// The rest of the budget is held by other streams.
	used, lim := h.srv.budget.usage()
	h.srv.budget.forceAcquire("t", lim-used)
	var r2 streamResponse
	code, _ := h.do("POST", "/v1/streams/"+sa.ID+"/append", "key-a", map[string]any{"flush": true}, &r2)
	after, _ := h.srv.budget.usage()
	t.Logf("after the append: %d verdicts, position %d; held by the encoder %d; flush: status %d, %d verdicts, position %d; budget used %d of %d",
		len(r1.Tokens), r1.State.Position, held, code, len(r2.Tokens), r2.State.Position, after, lim)
	if after > lim {
		t.Fatalf("the KV budget is overshot by %d positions by the flush of %d held bytes", after-lim, held)
	}
}
