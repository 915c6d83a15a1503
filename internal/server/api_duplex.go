package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/jsonkeys"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// The long-lived form: POST /v1/streams/connect carries one stream over
// one HTTP request in both directions at once. The client writes one JSON
// operation per line (NDJSON) and reads one JSON answer per line, or
// Server-Sent Events when it sends "Accept: text/event-stream". The stream
// lives as long as the request: the client ends it with {"op": "close"}
// or by ending its body. It needs no dependency beyond net/http (HTTP/1.1
// chunked bodies, full duplex).

// duplexOp is one client line.
type duplexOp struct {
	Op  string          `json:"op"` // open, append, flush, prompt, state, close
	Seq json.RawMessage `json:"seq,omitempty"`
	promptInput
	Text  *string `json:"text"`
	IDs   []int   `json:"ids"`
	Flush bool    `json:"flush"`
	// The open operation resumes a lost stream with these.
	resumeInput
}

// duplexReply is one server line.
type duplexReply struct {
	Op     string               `json:"op"`
	Seq    json.RawMessage      `json:"seq,omitempty"`
	ID     string               `json:"id,omitempty"`
	Prompt *guard.PromptVerdict `json:"prompt,omitempty"`
	Tokens []guard.TokenVerdict `json:"tokens,omitempty"`
	Ended  *State               `json:"ended,omitempty"` // as streamResponse.Ended
	State  *State               `json:"state,omitempty"`
	Error  *apiErrorBody        `json:"error,omitempty"`
}

func (srv *Server) connect(w http.ResponseWriter, r *http.Request, t *Tenant) {
	// The stream's id: the client's X-Streamguard-Stream (say, the id of
	// a stream it resumes), or a random one.
	id := newStreamID()
	if vals := r.Header.Values(StreamHeader); len(vals) > 0 {
		if len(vals) > 1 || !ValidStreamID(vals[0]) {
			writeHeaderErr(w, http.StatusBadRequest, "invalid_stream_id",
				fmt.Sprintf("give one %s header of 1 to %d characters of A-Z, a-z, 0-9, '_' and '-'", StreamHeader, MaxStreamIDLen))
			return
		}
		id = vals[0]
		w.Header().Set(StreamHeader, id)
	}
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex() // HTTP/2 is always full duplex and reports an error here
	// One stream per connection: closing it afterwards also keeps
	// net/http from reading a next request while the body's end is still
	// being read in full-duplex mode.
	w.Header().Set("Connection", "close")
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	lr := &lineReader{r: r.Body, rc: rc, srv: srv}
	d := &duplex{srv: srv, t: t, w: w, rc: rc, sse: sse, lr: lr, in: bufio.NewReaderSize(lr, 64<<10), streamID: id}
	stop := context.AfterFunc(srv.drainCtx, func() {
		rc.SetReadDeadline(time.Now()) // wake a blocked read; the loop then says goodbye
	})
	defer stop()
	defer func() {
		if d.c != nil && !d.c.closed {
			d.c.close("disconnected")
		}
		if d.reserved {
			srv.streamIDs.release(t, id)
		}
	}()
	d.serve(r.Context())
}

type duplex struct {
	srv *Server
	t   *Tenant
	w   http.ResponseWriter
	rc  *http.ResponseController
	sse bool
	lr  *lineReader
	in  *bufio.Reader
	c   *convo
	id  string // the open stream's id
	// streamID is the id the stream takes when it opens.
	streamID string
	reserved bool // streamID is claimed in srv.streamIDs while the connection lives
}

func (d *duplex) serve(ctx context.Context) {
	srv := d.srv
	goodbye := func() {
		d.send(duplexReply{Op: "shutdown", Error: &apiErrorBody{Type: "overloaded_error", Code: "shutting_down",
			Message: "the server is shutting down; reconnect and start a new stream", StreamEnded: true}})
	}
	for {
		if srv.isDraining() {
			goodbye()
			return
		}
		d.lr.startLine(d.in.Buffered() > 0)
		line, err := readLine(d.in, srv.opts.MaxBodyBytes)
		if len(bytes.TrimSpace(line)) == 0 && err == nil {
			continue
		}
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				srv.metrics.accepted.Add(1)
				d.reply(duplexReply{Op: "error", Error: &apiErrorBody{Type: "invalid_request_error", Code: "body_too_large",
					Message: fmt.Sprintf("a line is longer than %d bytes", srv.opts.MaxBodyBytes), StreamEnded: true}})
			case srv.isDraining():
				goodbye() // the drain cut the wait for the next line
			case d.lr.timeout != "" && len(line) > 0:
				// A line begun and not finished in time: the connection
				// cannot be read any further.
				srv.metrics.rejected("slow_body")
				d.send(duplexReply{Op: "error", Error: &apiErrorBody{Type: "invalid_request_error", Code: "request_timeout",
					Message: "request timeout: " + d.lr.timeout, StreamEnded: true}})
			}
			return // EOF, idle timeout, or a broken connection
		}
		srv.metrics.accepted.Add(1)
		if !d.handle(ctx, line) {
			return
		}
	}
}

// lineReader sets the connection's read deadline before each read of a
// duplex body: while waiting for a line's first byte, IdleTimeout; within
// a line, BodyIdleTimeout between bytes and RequestTimeout from its first
// byte. A drain that has begun makes the read stop at once.
type lineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	srv     *Server
	inLine  bool
	start   time.Time
	timeout string // the limit a read hit (within a line), if any
}

// startLine is called before each line; begun says part of it is already
// buffered.
func (l *lineReader) startLine(begun bool) {
	l.inLine, l.start, l.timeout = begun, time.Now(), ""
}

func (l *lineReader) Read(p []byte) (int, error) {
	o := &l.srv.opts
	now := time.Now()
	dl, what := now.Add(o.IdleTimeout), ""
	if l.inLine {
		dl, what = now.Add(o.BodyIdleTimeout), fmt.Sprintf("no byte of the line for %s", o.BodyIdleTimeout)
		if end := l.start.Add(o.RequestTimeout); !end.After(dl) {
			dl, what = end, "the line was not complete within the request timeout"
		}
	}
	l.rc.SetReadDeadline(dl)
	if l.srv.isDraining() { // checked after setting it: a drain in between is seen
		l.rc.SetReadDeadline(now)
	}
	n, err := l.r.Read(p)
	if n > 0 && !l.inLine {
		l.inLine, l.start = true, time.Now()
	}
	if err != nil && l.inLine && errors.Is(err, os.ErrDeadlineExceeded) {
		l.timeout = what
	}
	return n, err
}

func (srv *Server) isDraining() bool { return srv.drainCtx.Err() != nil }

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most limit bytes.
func readLine(r *bufio.Reader, limit int64) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if int64(len(line)) > limit {
			return nil, errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			return line, nil
		}
		return line, err
	}
}

// handle runs one operation and answers it; false ends the connection.
func (d *duplex) handle(ctx context.Context, line []byte) bool {
	srv := d.srv
	var op duplexOp
	bad := jsonkeys.Check(line, &op) // exact keys, each once, as decodeJSON
	if bad == nil {
		bad = json.Unmarshal(line, &op)
	}
	rep := duplexReply{Op: op.Op, Seq: op.Seq, ID: d.id}
	if bad != nil {
		rep = duplexReply{Op: "error"}
	}
	start := time.Now()
	code := http.StatusOK
	defer func() { srv.metrics.request(d.t.Name, "connect."+opName(rep.Op), code) }()
	// Every line counts against the rate limit, one that is not an
	// operation too: reading and answering it is work the client asked for.
	if ok, wait := d.t.limiter.allow(start); !ok {
		srv.metrics.rejected("rate_limit")
		code = http.StatusTooManyRequests
		rep.Error = &apiErrorBody{Type: "rate_limit_error", Code: "rate_limit", Message: "the tenant's request rate limit is exceeded",
			RetryAfter: max(1, int(wait.Seconds()+0.999))}
		return d.reply(rep)
	}
	if bad != nil {
		code = http.StatusBadRequest
		return d.fail(rep, badRequest{fmt.Errorf("invalid JSON line: %w", bad)})
	}
	ctx, cancel := context.WithTimeout(ctx, srv.opts.RequestTimeout)
	defer cancel()

	if op.Op != "open" && d.c == nil {
		code = http.StatusBadRequest
		return d.fail(rep, badRequest{errors.New(`no stream yet: the first operation must be {"op": "open", ...}`)})
	}
	if op.Op != "open" && op.resumeInput.any() {
		code = http.StatusBadRequest
		return d.fail(rep, badRequest{errors.New(`"resume", "response", "turns" and "tokens_from" belong to the open operation`)})
	}
	var err error
	switch op.Op {
	case "open":
		if d.c != nil {
			err = badRequest{errors.New("this connection already has a stream (one stream per connection)")}
			break
		}
		// The connection holds its stream's id while it lives, as a
		// session holds its own: no other stream of the tenant takes it.
		if !d.reserved {
			if !srv.streamIDs.reserve(d.t, d.streamID, srv.sessions) {
				err = errStreamExists
				break
			}
			d.reserved = true
		}
		in := createInput{promptInput: op.promptInput, resumeInput: op.resumeInput}
		var resp streamResponse
		if d.c, resp, err = srv.openStream(ctx, d.t, d.streamID, &in); err == nil {
			d.id = d.streamID
			rep.ID, rep.Prompt, rep.Tokens, rep.Ended = d.id, resp.Prompt, resp.Tokens, resp.Ended
		}
	case "append":
		in := appendInput{Text: op.Text, IDs: op.IDs, Flush: op.Flush}
		rep.Tokens, err = d.c.appendInput(ctx, &in)
	case "flush":
		var tvs []guard.TokenVerdict
		tvs, err = d.c.flush(ctx)
		rep.Tokens = tokensOrEmpty(tvs)
	case "prompt":
		var msgs []tokenizer.Message
		if msgs, err = op.promptInput.messages(); err == nil {
			srv.auditContent(d.c, "prompt", msgs)
			rep.Tokens, rep.Ended, rep.Prompt, err = d.c.nextTurn(ctx, msgs)
			err = lengthParam(err, op.promptInput.field())
		}
	case "state":
	case "close":
		// The response's held-back end is judged first: it is the
		// response's last words.
		var cerr error
		rep.Tokens, _, cerr = d.c.endHeld(ctx)
		st := d.c.state()
		st.ID = d.id
		d.c.close("closed")
		rep.State = &st
		if cerr != nil {
			d.fail(rep, streamEnded{cerr})
			return false
		}
		d.reply(rep)
		return false
	default:
		err = badRequest{fmt.Errorf("unknown op %q: want open, append, flush, prompt, state or close", op.Op)}
	}
	if err != nil {
		code, _, _ = srv.errorStatus(err)
		return d.fail(rep, err)
	}
	st := d.c.state()
	st.ID = d.id
	rep.State = &st
	return d.reply(rep)
}

func opName(op string) string {
	switch op {
	case "open", "append", "flush", "prompt", "state", "close":
		return op
	}
	return "other"
}

// sseEvent names an answer's event: its operation when the server knows
// it, else "error". The op echoed is the client's text, and a line break
// in it would start events of the client's making.
func sseEvent(op string) string {
	switch op {
	case "shutdown", "error":
		return op
	}
	if name := opName(op); name != "other" {
		return name
	}
	return "error"
}

// fail answers with an error; the connection goes on unless the stream
// ended.
func (d *duplex) fail(rep duplexReply, err error) bool {
	_, body, wait := d.srv.errorStatus(err)
	if wait > 0 {
		body.RetryAfter = max(1, int(wait.Seconds()+0.999))
	}
	if d.c != nil && d.c.closed {
		body.StreamEnded = true
	}
	rep.Error = &body
	return d.reply(rep) && !body.StreamEnded
}

// reply writes one answer and counts it as answered once it is flushed.
func (d *duplex) reply(rep duplexReply) bool {
	if !d.send(rep) {
		return false
	}
	d.srv.metrics.answered.Add(1)
	return true
}

func (d *duplex) send(rep duplexReply) bool {
	b, err := json.Marshal(rep)
	if err != nil {
		return false
	}
	var buf bytes.Buffer
	if d.sse {
		fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", sseEvent(rep.Op), b)
	} else {
		buf.Write(b)
		buf.WriteByte('\n')
	}
	// A client that stops reading is let go after the body's idle
	// allowance, like one that stops writing: it would hold its stream,
	// KV charge and connection slot.
	if d.rc.SetWriteDeadline(time.Now().Add(d.srv.opts.BodyIdleTimeout)) != nil {
		return false
	}
	if _, err := d.w.Write(buf.Bytes()); err != nil {
		return false
	}
	return d.rc.Flush() == nil
}
