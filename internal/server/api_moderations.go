package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/guard"
)

// maxModerationInputs bounds the inputs of one moderation request.
const maxModerationInputs = 256

// moderationRequest is OpenAI's request: input is a string, an array of
// strings, an array of text parts ({"type": "text", "text": ...}, joined
// into one input), a conversation ({"messages": [...]}), or an array mixing
// strings and conversations.
type moderationRequest struct {
	Input json.RawMessage `json:"input"`
	Model string          `json:"model"`
}

// parseModerationInput turns the input field into conversations: a plain
// text is one user turn.
func parseModerationInput(raw json.RawMessage) ([][]guard.Message, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New(`"input" is required`)
	}
	user := func(s string) []guard.Message { return []guard.Message{{Role: "user", Content: s}} }
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		return [][]guard.Message{user(s)}, nil
	case '{':
		msgs, err := parseConversation(raw)
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		return [][]guard.Message{msgs}, nil
	case '[':
	default:
		return nil, errors.New(`"input" must be a string, an array, or {"messages": [...]}`)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	if len(items) == 0 {
		return nil, errors.New(`"input" is an empty array`)
	}
	if len(items) > maxModerationInputs {
		return nil, fmt.Errorf(`"input" has %d items; at most %d per request`, len(items), maxModerationInputs)
	}
	var out [][]guard.Message
	var parts []string
	for i, it := range items {
		it = bytes.TrimSpace(it)
		if len(it) > 0 && it[0] == '"' {
			var s string
			if err := json.Unmarshal(it, &s); err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			out = append(out, user(s))
			continue
		}
		var part struct {
			Type     string          `json:"type"`
			Text     string          `json:"text"`
			Messages json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(it, &part); err != nil {
			return nil, fmt.Errorf("input[%d]: want a string, a text part or {\"messages\": [...]}: %w", i, err)
		}
		switch {
		case part.Messages != nil:
			msgs, err := parseConversation(it)
			if err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			out = append(out, msgs)
		case part.Type == "text":
			parts = append(parts, part.Text)
		case part.Type != "":
			return nil, fmt.Errorf("input[%d]: part type %q cannot be judged (text only)", i, part.Type)
		default:
			return nil, fmt.Errorf("input[%d]: want a string, a text part or {\"messages\": [...]}", i)
		}
	}
	if len(parts) > 0 {
		if len(out) > 0 {
			return nil, errors.New("input: text parts and other inputs cannot be mixed")
		}
		out = append(out, user(strings.Join(parts, "\n")))
	}
	return out, nil
}

// parseConversation reads {"messages": [...]} with OpenAI messages: content
// is a string or an array of text parts; roles are system (developer is
// read as system), user and assistant.
func parseConversation(raw json.RawMessage) ([]guard.Message, error) {
	var conv struct {
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(raw, &conv); err != nil {
		return nil, err
	}
	if len(conv.Messages) == 0 {
		return nil, errors.New(`"messages" is empty`)
	}
	msgs := make([]guard.Message, 0, len(conv.Messages))
	for i, m := range conv.Messages {
		msg, err := parseMessage(m)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

func parseMessage(raw json.RawMessage) (guard.Message, error) {
	var m struct {
		Role             string          `json:"role"`
		Content          json.RawMessage `json:"content"`
		ReasoningContent string          `json:"reasoning_content"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return guard.Message{}, err
	}
	switch m.Role {
	case "developer":
		m.Role = "system"
	case "system", "user", "assistant":
	default:
		return guard.Message{}, fmt.Errorf("role %q: want system, developer, user or assistant", m.Role)
	}
	text, err := contentText(m.Content)
	if err != nil {
		return guard.Message{}, err
	}
	return guard.Message{Role: m.Role, Content: text, ReasoningContent: m.ReasoningContent}, nil
}

// contentText reads an OpenAI message content: a string, null, or an
// array of parts of which the text ones are joined.
func contentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content: want a string or an array of parts: %w", err)
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" || p.Type == "input_text" || p.Type == "output_text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

// moderationResult is one result: OpenAI's fields plus Qwen3Guard's.
type moderationResult struct {
	Flagged        bool               `json:"flagged"`
	Categories     map[string]bool    `json:"categories"`
	CategoryScores map[string]float32 `json:"category_scores"`
	// RiskLevel, Category and the probabilities are those of the deciding
	// verdict: the response token that flagged (or ended the decisive
	// run), else the prompt when it is flagged, else the most risky
	// verdict. Category is empty when the level is the safe one.
	RiskLevel             string             `json:"risk_level"`
	Category              string             `json:"category"`
	RiskProbabilities     map[string]float32 `json:"risk_probabilities"`
	CategoryProbabilities map[string]float32 `json:"category_probabilities"`
	Qwen3Guard            qwen3GuardDetail   `json:"qwen3guard"`
}

type qwen3GuardDetail struct {
	Prompt   *guard.PromptVerdict `json:"prompt"`
	Response *responseDetail      `json:"response,omitempty"`
}

type responseDetail struct {
	Flagged      bool           `json:"flagged"`
	FlaggedIndex int            `json:"flagged_index"`
	Decision     guard.Decision `json:"decision"`
	Tokens       int            `json:"tokens"`
}

type moderationResponse struct {
	ID      string             `json:"id"`
	Model   string             `json:"model"`
	Results []moderationResult `json:"results"`
}

func (srv *Server) moderations(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var req moderationRequest
	if err := decodeJSON(r, &req); err != nil {
		srv.writeError(w, err)
		return
	}
	convs, err := parseModerationInput(req.Input)
	if err != nil {
		srv.writeError(w, badRequest{err})
		return
	}
	results, err := srv.moderate(r.Context(), t, convs)
	if err != nil {
		srv.writeError(w, lengthParam(err, "input"))
		return
	}
	writeJSON(w, http.StatusOK, moderationResponse{ID: "modr-" + newStreamID(), Model: srv.name, Results: results})
}

// conversationVerdict is one judged conversation.
type conversationVerdict struct {
	prompt   *guard.PromptVerdict
	tokens   []guard.TokenVerdict // judged response tokens
	response *responseDetail
}

// judge runs each conversation on its own stream, all submitted to the
// scheduler at once so that they share steps.
func (srv *Server) judge(ctx context.Context, t *Tenant, convs [][]guard.Message) ([]conversationVerdict, error) {
	out := make([]conversationVerdict, len(convs))
	errs := make([]error, len(convs))
	var wg sync.WaitGroup
	for i, msgs := range convs {
		wg.Go(func() {
			c, err := srv.openConvo(t, "modr-"+newStreamID(), 0)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.close("done")
			srv.auditContent(c, "conversation", msgs)
			res, err := c.judgeConversation(ctx, msgs)
			if err != nil {
				errs[i] = err
				return
			}
			v := conversationVerdict{prompt: res.Prompt}
			if msgs[len(msgs)-1].Role == "assistant" {
				v.tokens = judgedOnly(res.Tokens)
				idx, flagged := c.s.Flagged()
				if !flagged {
					idx = -1
				}
				v.response = &responseDetail{Flagged: flagged, FlaggedIndex: idx, Decision: c.s.Decision(), Tokens: len(v.tokens)}
			}
			out[i] = v
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if len(convs) > 1 {
				var br badRequest
				if errors.As(err, &br) {
					return nil, badRequest{fmt.Errorf("input %d: %w", i, err)}
				}
			}
			return nil, err
		}
	}
	return out, nil
}

func (srv *Server) moderate(ctx context.Context, t *Tenant, convs [][]guard.Message) ([]moderationResult, error) {
	vs, err := srv.judge(ctx, t, convs)
	if err != nil {
		return nil, err
	}
	results := make([]moderationResult, len(vs))
	for i := range vs {
		results[i] = srv.result(&vs[i])
	}
	return results, nil
}

// result turns a judged conversation into OpenAI's result. A category's
// score is the largest, over the verdicts, of P(not safe) × P(category);
// the category labels are the model's (response categories, then the
// query-only ones).
func (srv *Server) result(v *conversationVerdict) moderationResult {
	l := srv.info.Labels
	res := moderationResult{
		Categories: map[string]bool{}, CategoryScores: map[string]float32{},
		Qwen3Guard: qwen3GuardDetail{Prompt: v.prompt, Response: v.response},
	}
	for _, c := range srv.categories {
		res.Categories[c], res.CategoryScores[c] = false, 0
	}
	score := func(vd *guard.Verdict, cats []string) {
		risky := 1 - vd.RiskProbs[0]
		for j, c := range cats {
			if s := risky * vd.CategoryProbs[j]; s > res.CategoryScores[c] {
				res.CategoryScores[c] = s
			}
		}
	}
	score(&v.prompt.Verdict, l.QueryCategory)
	for i := range v.tokens {
		score(&v.tokens[i].Verdict, l.ResponseCategory)
	}

	// The deciding verdict.
	dv, fromPrompt := &v.prompt.Verdict, true
	decided := false
	if r := v.response; r != nil {
		at := r.FlaggedIndex
		if at < 0 {
			at = r.Decision.Index
		}
		if at >= 0 && at < len(v.tokens) {
			dv, fromPrompt, decided = &v.tokens[at].Verdict, false, true
		}
	}
	if !decided && !v.prompt.Flagged {
		for i := range v.tokens {
			if t := &v.tokens[i].Verdict; t.RiskProbs[0] < dv.RiskProbs[0] {
				dv, fromPrompt = t, false
			}
		}
	}
	riskLabels, catLabels := l.QueryRisk, l.QueryCategory
	if !fromPrompt {
		riskLabels, catLabels = l.ResponseRisk, l.ResponseCategory
	}
	res.RiskLevel, res.Category = dv.Risk, categoryOf(*dv)
	res.RiskProbabilities = probMap(riskLabels, dv.RiskProbs)
	res.CategoryProbabilities = probMap(catLabels, dv.CategoryProbs)

	res.Flagged = v.prompt.Flagged
	if v.prompt.Flagged {
		res.Categories[v.prompt.Category] = true
	}
	if r := v.response; r != nil && r.Flagged {
		res.Flagged = true
		res.Categories[v.tokens[r.FlaggedIndex].Category] = true
	}
	return res
}

func probMap(labels []string, p []float32) map[string]float32 {
	m := make(map[string]float32, len(labels))
	for i, l := range labels {
		if i < len(p) {
			m[l] = p[i]
		}
	}
	return m
}
