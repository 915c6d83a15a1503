package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// finish writes the request's audit record and reports its outcome, once.
func (x *exchange) finish(event string, attrs ...slog.Attr) {
	if x.finished {
		return
	}
	x.finished = true
	if event != EventAllowed {
		x.forgetAnswer()
	}
	if x.unjudged != nil || event == EventUnjudged {
		// Text went to the client unjudged (fail-open), whatever ended
		// the exchange: a client gone or an upstream broken off after it
		// is still an answer the guard did not judge.
		attrs = append(attrs, slog.Bool("unjudged", true))
		if x.unjudged != nil && !slices.ContainsFunc(attrs, func(a slog.Attr) bool { return a.Key == "reason" }) {
			attrs = append(attrs, slog.String("reason", x.unjudged.Error()))
		}
	}
	d := time.Since(x.start)
	if a := x.h.cfg.Audit; a != nil {
		base := []slog.Attr{
			slog.String("tenant", x.t.Name), slog.String("request_id", x.id), slog.String("event", event),
			slog.String("mode", x.t.Mode.String()), slog.Bool("stream", x.req != nil && x.req.Stream),
			slog.Int("tokens", x.tokens), slog.Int64("duration_ms", d.Milliseconds()),
		}
		a.LogAttrs(context.Background(), slog.LevelInfo, "proxy decision", append(base, attrs...)...)
	}
	if o := x.h.cfg.Observe; o != nil {
		o(Outcome{Tenant: x.t.Name, Event: event, Stream: x.req != nil && x.req.Stream, Mode: x.t.Mode, Tokens: x.tokens, Duration: d})
	}
}

func verdictAttrs(v *guard.Verdict, token int) []slog.Attr {
	attrs := []slog.Attr{slog.String("level", v.Level), slog.String("category", v.Category), slog.Float64("prob", float64(v.RiskProb))}
	if token >= 0 {
		attrs = append(attrs, slog.Int("token", token))
	}
	return attrs
}

// upstreamErrorAttrs describe an error the upstream sent inside a stream,
// for the audit record: its size and its type and code where they are
// short identifiers, never its message or anything else. Gateways quote
// the request in their messages, and a Responses API response.failed
// event carries the instructions and the output so far, text the guard
// may have held back; the audit record holds decisions, not content.
func upstreamErrorAttrs(raw []byte) []slog.Attr {
	attrs := []slog.Attr{slog.Int("error_bytes", len(raw))}
	type typeCode struct {
		Type json.RawMessage `json:"type"`
		Code json.RawMessage `json:"code"`
	}
	var e struct {
		typeCode
		Response struct {
			Error typeCode `json:"error"`
		} `json:"response"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return attrs
	}
	code := e.Code
	if e.Response.Error.Code != nil {
		code = e.Response.Error.Code // response.failed: the response's error
	}
	if t, ok := identifier(e.Type); ok {
		attrs = append(attrs, slog.String("error_type", t))
	}
	if c, ok := identifier(code); ok {
		attrs = append(attrs, slog.String("error_code", c))
	}
	return attrs
}

// identifier is v, a JSON string or number, when it is a short name made
// of letters, digits and . _ : - (an error's type or code), else false.
func identifier(v json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(v, &s) != nil {
		var n json.Number
		if json.Unmarshal(v, &n) != nil {
			return "", false
		}
		s = n.String()
	}
	if s == "" || len(s) > 64 {
		return "", false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return "", false
		}
	}
	return s, true
}
