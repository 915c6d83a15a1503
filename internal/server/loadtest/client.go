package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// errServerGone is a transport failure after SIGTERM: the server no longer
// takes requests, which is expected.
var errServerGone = errors.New("server gone after SIGTERM")

// phaseState is what the workers of one phase share.
type phaseState struct {
	base   string
	key    string
	client *http.Client
	// duplexClient opens a fresh connection per duplex stream (the server
	// closes it after the stream), never a pooled one that may be stale.
	duplexClient *http.Client
	sigterm      atomic.Bool // SIGTERM was sent
	answers      atomic.Int64
	rejected     atomic.Int64 // 429s
	refused      atomic.Int64 // requests that found the server gone
}

// stream is one conversation on the server, over REST or a duplex
// connection.
type stream interface {
	open(ctx context.Context, prompt string) (*guard.PromptVerdict, error)
	append(ctx context.Context, ids []int, text *string) ([]guard.TokenVerdict, error)
	flush(ctx context.Context) ([]guard.TokenVerdict, error)
	close(ctx context.Context) error
}

type apiErr struct {
	Error struct {
		Message     string `json:"message"`
		Code        string `json:"code"`
		RetryAfter  int    `json:"retry_after"`
		StreamEnded bool   `json:"stream_ended"`
	} `json:"error"`
}

// statusError is an HTTP answer other than the expected one.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.code, e.body) }

// retryable reports a 429 and how long to wait.
func retryable(err error) (time.Duration, bool) {
	var se *statusError
	if !errors.As(err, &se) || se.code != http.StatusTooManyRequests {
		return 0, false
	}
	var e apiErr
	json.Unmarshal([]byte(se.body), &e)
	return time.Duration(max(e.Error.RetryAfter, 1)) * time.Second, true
}

// withRetry repeats op while it is refused with 429, waiting as told
// (with jitter, so that refused clients do not return in lockstep).
func (ps *phaseState) withRetry(ctx context.Context, op func() error) error {
	for {
		err := op()
		wait, ok := retryable(err)
		if !ok {
			return err
		}
		ps.rejected.Add(1)
		wait = time.Duration(float64(wait) * (0.5 + rand.Float64()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// call sends one request and decodes a 2xx answer into out.
func (ps *phaseState) call(ctx context.Context, method, path string, body, out any, want int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, ps.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if ps.key != "" {
		req.Header.Set("Authorization", "Bearer "+ps.key)
	}
	resp, err := ps.client.Do(req)
	if err != nil {
		if ps.sigterm.Load() {
			ps.refused.Add(1)
			return errServerGone
		}
		return err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		if ps.sigterm.Load() {
			return fmt.Errorf("answer cut after SIGTERM (lost): %w", err)
		}
		return err
	}
	ps.answers.Add(1)
	if resp.StatusCode != want {
		if resp.StatusCode == http.StatusServiceUnavailable && ps.sigterm.Load() {
			return errServerGone
		}
		return &statusError{resp.StatusCode, string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

type streamAnswer struct {
	ID     string               `json:"id"`
	Prompt *guard.PromptVerdict `json:"prompt"`
	Tokens []guard.TokenVerdict `json:"tokens"`
}

// restStream uses POST /v1/streams and the per-id endpoints.
type restStream struct {
	ps *phaseState
	id string
}

func (r *restStream) open(ctx context.Context, prompt string) (*guard.PromptVerdict, error) {
	var a streamAnswer
	err := r.ps.withRetry(ctx, func() error {
		return r.ps.call(ctx, "POST", "/v1/streams", map[string]any{"prompt": prompt}, &a, http.StatusCreated)
	})
	r.id = a.ID
	return a.Prompt, err
}

func (r *restStream) append(ctx context.Context, ids []int, text *string) ([]guard.TokenVerdict, error) {
	body := map[string]any{"ids": ids}
	if text != nil {
		body = map[string]any{"text": *text}
	}
	var a streamAnswer
	err := r.ps.withRetry(ctx, func() error {
		return r.ps.call(ctx, "POST", "/v1/streams/"+r.id+"/append", body, &a, http.StatusOK)
	})
	return a.Tokens, err
}

func (r *restStream) flush(ctx context.Context) ([]guard.TokenVerdict, error) {
	var a streamAnswer
	err := r.ps.withRetry(ctx, func() error {
		return r.ps.call(ctx, "POST", "/v1/streams/"+r.id+"/flush", nil, &a, http.StatusOK)
	})
	return a.Tokens, err
}

func (r *restStream) close(ctx context.Context) error {
	return r.ps.call(ctx, "DELETE", "/v1/streams/"+r.id, nil, nil, http.StatusOK)
}

// duplexStream uses one POST /v1/streams/connect per conversation.
type duplexStream struct {
	ps   *phaseState
	w    *io.PipeWriter
	resp *http.Response
	rd   *bufio.Reader
}

type duplexAnswer struct {
	Op     string               `json:"op"`
	Prompt *guard.PromptVerdict `json:"prompt"`
	Tokens []guard.TokenVerdict `json:"tokens"`
	Error  *struct {
		Message    string `json:"message"`
		Code       string `json:"code"`
		RetryAfter int    `json:"retry_after"`
	} `json:"error"`
}

func (d *duplexStream) connect(ctx context.Context) error {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, "POST", d.ps.base+"/v1/streams/connect", pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if d.ps.key != "" {
		req.Header.Set("Authorization", "Bearer "+d.ps.key)
	}
	// A failed round trip waits for the body writer, which waits on the
	// pipe: if the answer's headers do not come, close the pipe.
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := d.ps.duplexClient.Do(req)
		done <- result{resp, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		pw.CloseWithError(errors.New("no answer to the connect request"))
		r = <-done
	}
	resp, err := r.resp, r.err
	if err != nil {
		pw.Close()
		if d.ps.sigterm.Load() {
			d.ps.refused.Add(1)
			return errServerGone
		}
		return err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pw.Close()
		return &statusError{resp.StatusCode, string(b)}
	}
	d.w, d.resp, d.rd = pw, resp, bufio.NewReaderSize(resp.Body, 64<<10)
	return nil
}

// do writes one operation and reads its answer.
func (d *duplexStream) do(op map[string]any) (*duplexAnswer, error) {
	b, _ := json.Marshal(op)
	if _, err := d.w.Write(append(b, '\n')); err != nil {
		if d.ps.sigterm.Load() {
			return nil, errServerGone
		}
		return nil, err
	}
	line, err := d.rd.ReadBytes('\n')
	if err != nil {
		if d.ps.sigterm.Load() {
			return nil, fmt.Errorf("duplex answer cut after SIGTERM (lost): %w", err)
		}
		return nil, err
	}
	var a duplexAnswer
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, err
	}
	if a.Op == "shutdown" {
		// The server drained before reading the operation: not accepted.
		return nil, errServerGone
	}
	d.ps.answers.Add(1)
	if a.Error != nil {
		code := http.StatusBadRequest
		if a.Error.Code == "kv_budget" || a.Error.Code == "stream_limit" || a.Error.Code == "rate_limit" {
			code = http.StatusTooManyRequests
		}
		body, _ := json.Marshal(map[string]any{"error": a.Error})
		return nil, &statusError{code, string(body)}
	}
	return &a, nil
}

func (d *duplexStream) open(ctx context.Context, prompt string) (*guard.PromptVerdict, error) {
	var a *duplexAnswer
	err := d.ps.withRetry(ctx, func() error {
		if d.w != nil {
			d.shut()
		}
		if err := d.connect(ctx); err != nil {
			return err
		}
		var err error
		a, err = d.do(map[string]any{"op": "open", "prompt": prompt})
		return err
	})
	if err != nil {
		return nil, err
	}
	return a.Prompt, nil
}

func (d *duplexStream) append(ctx context.Context, ids []int, text *string) ([]guard.TokenVerdict, error) {
	op := map[string]any{"op": "append", "ids": ids}
	if text != nil {
		op = map[string]any{"op": "append", "text": *text}
	}
	var a *duplexAnswer
	err := d.ps.withRetry(ctx, func() error {
		var err error
		a, err = d.do(op)
		return err
	})
	if err != nil {
		return nil, err
	}
	return a.Tokens, nil
}

func (d *duplexStream) flush(ctx context.Context) ([]guard.TokenVerdict, error) {
	a, err := d.do(map[string]any{"op": "flush"})
	if err != nil {
		return nil, err
	}
	return a.Tokens, nil
}

func (d *duplexStream) close(ctx context.Context) error {
	_, err := d.do(map[string]any{"op": "close"})
	d.shut()
	return err
}

func (d *duplexStream) shut() {
	if d.w != nil {
		d.w.Close()
		io.Copy(io.Discard, d.resp.Body)
		d.resp.Body.Close()
		d.w = nil
	}
}
