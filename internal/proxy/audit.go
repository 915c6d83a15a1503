package proxy

import (
	"context"
	"log/slog"
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
