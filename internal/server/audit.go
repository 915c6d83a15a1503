package server

import (
	"context"
	"log/slog"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// The audit log records decisions, one JSON object per line (slog): the
// tenant, the stream, the level, the category and the token index. Text
// is included only for tenants with log_content.

func (srv *Server) auditPrompt(c *convo, p *guard.PromptVerdict) {
	attrs := []slog.Attr{
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id),
		slog.String("level", p.Level), slog.String("category", categoryOf(p.Verdict)),
		slog.Float64("risk_prob", float64(p.RiskProb)), slog.Bool("flagged", p.Flagged), slog.Int("position", p.Position),
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "prompt", attrs...)
}

func (srv *Server) auditFlag(c *convo, t *guard.TokenVerdict) {
	attrs := []slog.Attr{
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id),
		slog.String("level", t.Level), slog.String("category", categoryOf(t.Verdict)),
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
	logged := make([]auditMessage, len(msgs))
	for i, m := range msgs {
		logged[i] = auditMessage{m.Role, m.Content, m.ReasoningContent, m.ToolCalls}
	}
	srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "content",
		slog.String("tenant", c.tenant.Name), slog.String("stream", c.id), slog.String("what", what), slog.Any("messages", logged))
}

// auditMessage is a message as the audit log writes it: tokenizer.Message
// keeps its tool calls out of JSON (data files spell them OpenAI's way).
type auditMessage struct {
	Role             string               `json:"role"`
	Content          string               `json:"content"`
	ReasoningContent string               `json:"reasoning_content,omitempty"`
	ToolCalls        []tokenizer.ToolCall `json:"tool_calls,omitempty"`
}

// categoryOf is a verdict's category as reported: none for a verdict its
// policy counts as safe (Level), where the category head means nothing.
func categoryOf(v guard.Verdict) string {
	if v.Level == guard.Safe {
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
