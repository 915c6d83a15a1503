package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// duplexClient drives POST /v1/streams/connect: it writes one line and
// reads one answer at a time.
type duplexClient struct {
	t    *testing.T
	w    *io.PipeWriter
	resp *http.Response
	rd   *bufio.Reader
	sse  bool
}

func (h *harness) connect(key string, sse bool) *duplexClient {
	h.t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", h.ts.URL+"/v1/streams/connect", pr)
	if err != nil {
		h.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if sse {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		pw.Close()
		resp.Body.Close()
	})
	return &duplexClient{t: h.t, w: pw, resp: resp, rd: bufio.NewReader(resp.Body), sse: sse}
}

func (d *duplexClient) send(op map[string]any) {
	d.t.Helper()
	b, _ := json.Marshal(op)
	if _, err := d.w.Write(append(b, '\n')); err != nil {
		d.t.Fatal(err)
	}
}

// recv reads one answer; ok is false at the end of the response.
func (d *duplexClient) recv() (rep duplexReply, ok bool) {
	d.t.Helper()
	var data string
	if d.sse {
		var event string
		for {
			line, err := d.rd.ReadString('\n')
			if err != nil {
				return rep, false
			}
			line = strings.TrimRight(line, "\n")
			if line == "" && data != "" {
				break
			}
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
		}
		defer func() {
			if sseEvent(rep.Op) != event || (event != "error" && rep.Op != event) {
				d.t.Fatalf("event %q carries op %q", event, rep.Op)
			}
		}()
	} else {
		line, err := d.rd.ReadString('\n')
		if err != nil {
			return rep, false
		}
		data = line
	}
	if err := json.Unmarshal([]byte(data), &rep); err != nil {
		d.t.Fatalf("answer %q: %v", data, err)
	}
	return rep, true
}

func (d *duplexClient) do(op map[string]any) duplexReply {
	d.t.Helper()
	d.send(op)
	rep, ok := d.recv()
	if !ok {
		d.t.Fatalf("%v: connection ended", op)
	}
	return rep
}

// TestDuplex runs a stream over one connection, in NDJSON and in SSE
// framing, and checks the verdicts against the solo run.
func TestDuplex(t *testing.T) {
	m := testModel(t)
	user := []tokenizer.Message{{Role: "user", Content: testPrompt}}
	respIDs := guardhook.Tokenizer(m).Encode(testResponse)
	wantPV, wantTok := solo(t, m, m.Policy(), user, respIDs)
	for _, sse := range []bool{false, true} {
		t.Run(fmt.Sprint("sse=", sse), func(t *testing.T) {
			h := newHarness(t, Options{Config: twoTenants(nil)})
			d := h.connect("key-a", sse)
			if d.resp.StatusCode != 200 {
				t.Fatalf("status %d", d.resp.StatusCode)
			}
			if rep := d.do(map[string]any{"op": "append", "text": "x"}); rep.Error == nil || rep.Error.StreamEnded {
				t.Fatalf("append before open: %+v", rep)
			}
			open := d.do(map[string]any{"op": "open", "seq": 1, "messages": user})
			if open.Error != nil || len(open.ID) != 32 || string(open.Seq) != "1" || open.State == nil {
				t.Fatalf("open: %+v", open)
			}
			samePrompt(t, "open", open.Prompt, wantPV)
			var got []guard.TokenVerdict
			text := []rune(testResponse)
			for i := 0; i < len(text); i += 5 {
				rep := d.do(map[string]any{"op": "append", "text": string(text[i:min(i+5, len(text))])})
				if rep.Error != nil {
					t.Fatalf("append: %+v", rep.Error)
				}
				got = append(got, rep.Tokens...)
			}
			fl := d.do(map[string]any{"op": "flush"})
			got = append(got, fl.Tokens...)
			sameTokens(t, "duplex", got, wantTok)
			if rep := d.do(map[string]any{"op": "dance"}); rep.Error == nil || !strings.Contains(rep.Error.Message, "unknown op") {
				t.Fatalf("unknown op: %+v", rep)
			}
			cl := d.do(map[string]any{"op": "close"})
			if cl.State == nil || cl.State.Decision.Tokens != len(respIDs) {
				t.Fatalf("close: %+v", cl)
			}
			if _, ok := d.recv(); ok {
				t.Fatal("connection still open after close")
			}
			if h.srv.metrics.openStreams.Load() != 0 {
				t.Fatal("stream left open")
			}
			if a, b := h.srv.metrics.accepted.Load(), h.srv.metrics.answered.Load(); a != b || a < 5 {
				t.Fatalf("accepted %d, answered %d", a, b)
			}
		})
	}
}

// TestDuplexDisconnectAndDrain: a client that goes away frees its stream;
// draining ends a connection with a shutdown line after its operation.
func TestDuplexDisconnectAndDrain(t *testing.T) {
	h := newHarness(t, Options{})
	d := h.connect("", false)
	d.do(map[string]any{"op": "open", "prompt": "hi"})
	d.w.Close()
	if _, ok := d.recv(); ok {
		t.Fatal("answer after the client ended")
	}
	d2 := h.connect("", false)
	d2.do(map[string]any{"op": "open", "prompt": "hi"})
	h.srv.Drain()
	rep, ok := d2.recv()
	if !ok || rep.Op != "shutdown" || rep.Error == nil || rep.Error.Code != "shutting_down" {
		t.Fatalf("after drain: %+v %v", rep, ok)
	}
	if _, ok := d2.recv(); ok {
		t.Fatal("connection open after the shutdown line")
	}
	for h.srv.metrics.openStreams.Load() != 0 { // the handlers return after the response ends
		runtime.Gosched()
	}
}

func TestDuplexLineLimit(t *testing.T) {
	h := newHarness(t, Options{MaxBodyBytes: 200})
	d := h.connect("", false)
	rep := d.do(map[string]any{"op": "open", "prompt": strings.Repeat("x", 300)})
	if rep.Error == nil || rep.Error.Code != "body_too_large" || !rep.Error.StreamEnded {
		t.Fatalf("long line: %+v", rep)
	}
}

// TestDuplexThenREST alternates duplex connections and REST calls on one
// client, so that connections are reused: the server must neither panic
// nor misread a request after a full-duplex one.
func TestDuplexThenREST(t *testing.T) {
	h := newHarness(t, Options{})
	for i := range 5 {
		d := h.connect("", false)
		d.do(map[string]any{"op": "open", "prompt": "hi"})
		d.do(map[string]any{"op": "append", "ids": []int{9707}})
		if rep := d.do(map[string]any{"op": "close"}); rep.Error != nil {
			t.Fatal(i, rep.Error)
		}
		d.w.Close()
		d.resp.Body.Close()
		if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, nil); code != 201 {
			t.Fatalf("round %d: status %d", i, code)
		}
	}
}

// An operation the server does not know is answered as an error event:
// the op is the client's text, and written as the event's name a line
// break in it would start events of the client's making.
func TestDuplexSSEEventNames(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	d := h.connect("key-a", true)
	if d.resp.StatusCode != 200 {
		t.Fatalf("status %d", d.resp.StatusCode)
	}
	d.send(map[string]any{"op": "x\ndata: {\"op\":\"forged\"}\n\nevent: y"})
	var lines []string
	for {
		line, err := d.rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		if line = strings.TrimRight(line, "\n"); line == "" {
			break
		}
		lines = append(lines, line)
	}
	if len(lines) != 2 || lines[0] != "event: error" || !strings.HasPrefix(lines[1], "data: {") || !strings.Contains(lines[1], `"error"`) {
		t.Fatalf("answer %q, want one error event", lines)
	}
	for _, op := range []string{"open", "append", "flush", "prompt", "state", "close", "shutdown", "error"} {
		if got := sseEvent(op); got != op {
			t.Errorf("sseEvent(%q) = %q", op, got)
		}
	}
}

// TestDuplexHeldTail is TestHeldTailJudgedAtTurnEnd over a duplex
// connection: the prompt and close operations that end a response answer
// with the verdicts of its held-back last word.
func TestDuplexHeldTail(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.Policy = flagAll(m) })})
	d := h.connect("key-a", false)
	d.do(map[string]any{"op": "open", "prompt": testPrompt})
	if rep := d.do(map[string]any{"op": "append", "text": "poison"}); rep.Error != nil || len(rep.Tokens) != 0 {
		t.Fatalf("append: %+v", rep)
	}
	rep := d.do(map[string]any{"op": "prompt", "prompt": "Thanks"})
	if rep.Error != nil || tokenText(rep.Tokens) != "poison" || !rep.Tokens[0].Flagged || rep.Ended == nil || rep.Ended.Status != "flagged" || rep.Prompt == nil {
		t.Fatalf("prompt after held text: %+v", rep)
	}
	d.do(map[string]any{"op": "append", "text": "venom"})
	rep = d.do(map[string]any{"op": "close"})
	if rep.Error != nil || tokenText(rep.Tokens) != "venom" || rep.State == nil || rep.State.Status != "flagged" {
		t.Fatalf("close after held text: %+v", rep)
	}
}

// TestDuplexNonReader: a client that sends operations and never reads the
// answers used to block its handler in Write for good, keeping its stream,
// KV charge and connection slot past every timeout. Each reply now has
// the body's idle allowance to be taken.
func TestDuplexNonReader(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil), BodyIdleTimeout: 200 * time.Millisecond})
	d := h.connect("key-a", false)
	d.send(map[string]any{"op": "open", "prompt": testPrompt})
	// Each answer echoes seq: a few fill the connection's buffers.
	seq := strings.Repeat("x", 900<<10)
	go func() {
		for range 40 {
			b, _ := json.Marshal(map[string]any{"op": "state", "seq": seq})
			if _, err := d.w.Write(append(b, '\n')); err != nil {
				return
			}
		}
	}()
	tn := h.srv.tenants.list[0]
	deadline := time.Now().Add(20 * time.Second)
	for tn.open.Load() != 0 || tn.conns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a duplex client that stopped reading still holds %d streams and %d connections", tn.open.Load(), tn.conns.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Fatalf("%d positions still charged", used)
	}
}
