package server

import (
	"context"
	"log/slog"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// The audit log records decisions, one JSON object per line (slog): the
// tenant, the stream, the level, the category and the token index. Text
// is included only for tenants with log_content.

func (srv *Server) auditPrompt(c *convo, p *guard.PromptVerdict) {
	attrs := []slog.Attr{
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id),
		slog.String("level", levelOf(p.Verdict, p.Flagged, c.tenant.Policy.Mode, srv.info.Labels.QueryRisk)), slog.String("category", categoryOf(p.Verdict, p.Flagged)),
		slog.Float64("risk_prob", float64(p.RiskProb)), slog.Bool("flagged", p.Flagged), slog.Int("position", p.Position),
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "prompt", attrs...)
}

func (srv *Server) auditFlag(c *convo, t *guard.TokenVerdict) {
	attrs := []slog.Attr{
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id),
		slog.String("level", levelOf(t.Verdict, true, c.tenant.Policy.Mode, srv.info.Labels.ResponseRisk)), slog.String("category", categoryOf(t.Verdict, true)),
		slog.Int("token_index", t.Index), slog.Int("position", t.Position),
	}
	if c.tenant.LogContent {
		attrs = append(attrs, slog.String("token", t.Text))
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelWarn, "response flagged", attrs...)
}

func (srv *Server) auditClose(c *convo, reason string, d guard.Decision) {
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "stream closed",
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id), slog.String("reason", reason),
		slog.Bool("flagged", d.Flagged), slog.String("level", d.Level), slog.String("category", d.Category),
		slog.Int("token_index", d.Index), slog.Int("tokens", d.Tokens))
}

// auditResume records a stream opened by resume: the requests it
// replayed and the positions they fed.
func (srv *Server) auditResume(c *convo, requests, positions int) {
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "stream resumed",
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id),
		slog.Int("requests", requests), slog.Int("positions", positions))
}

// auditContent logs the text of a judged prompt for tenants that allow it.
func (srv *Server) auditContent(c *convo, what string, msgs []tokenizer.Message) {
	if !c.tenant.LogContent {
		return
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "content",
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id), slog.String("what", what), slog.Any("messages", msgs))
}

// thresholdFlag reports whether a verdict the policy flagged is at a level
// that does not flag on its own in the policy's mode (Safe; Controversial
// in loose mode): a tenant threshold on its category flagged it.
func thresholdFlag(v guard.Verdict, flagged bool, mode guard.Mode) bool {
	return flagged && (v.RiskIndex == 0 || mode == guard.Loose && strings.EqualFold(v.Risk, "controversial"))
}

// levelOf is a verdict's risk level as reported: the model's, or for a
// threshold flag the level the policy applied, the risk map's unsafe one.
func levelOf(v guard.Verdict, flagged bool, mode guard.Mode, labels []string) string {
	if thresholdFlag(v, flagged, mode) {
		return unsafeLabel(labels)
	}
	return v.Risk
}

// unsafeLabel is the risk map's unsafe level: "Unsafe", or the first
// label after the safe one in a map without it.
func unsafeLabel(labels []string) string {
	for _, l := range labels {
		if strings.EqualFold(l, "unsafe") {
			return l
		}
	}
	if len(labels) > 1 {
		return labels[1]
	}
	return ""
}

// categoryOf is a verdict's category as reported: none for a verdict whose
// likeliest level is the safe one, unless the policy flagged it (a
// tenant threshold on that category).
func categoryOf(v guard.Verdict, flagged bool) string {
	if v.RiskIndex == 0 && !flagged {
		return ""
	}
	return v.Category
}

// auditText logs appended response text for tenants that allow it.
func (srv *Server) auditText(c *convo, text string) {
	if !c.tenant.LogContent {
		return
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "content",
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id), slog.String("what", "response"), slog.String("text", text))
}
