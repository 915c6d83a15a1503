package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/tokenizer"
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

// moderationInput is one input to judge: a conversation, and the content
// parts that were skipped because the guard judges text only
// (see chatmsg.Skipped). A nil conversation is an input with nothing to judge
// (image parts only): its result is not flagged and says so in skipped.
type moderationInput struct {
	msgs    []tokenizer.Message
	skipped []string
	// results, when the conversation has tool results after its last user
	// turn, is the prompt followed by one user turn holding them
	// (moderatedTurns): judged too, after msgs.
	results []tokenizer.Message
}

// parseModerationInput turns the input field into conversations: a plain
// text is one user turn.
func parseModerationInput(raw json.RawMessage) ([]moderationInput, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New(`"input" is required`)
	}
	// A string is one user turn; a blank one is no text to judge (OpenAI
	// answers it with an unflagged result, not an error).
	user := func(s string) []tokenizer.Message {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		return []tokenizer.Message{{Role: "user", Content: s}}
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		return []moderationInput{{msgs: user(s)}}, nil
	case '{':
		in, err := parseConversation(raw)
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		return []moderationInput{in}, nil
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
	var out []moderationInput
	var parts []string
	var partSkips chatmsg.Skipped
	nparts := 0
	for i, it := range items {
		it = bytes.TrimSpace(it)
		if len(it) > 0 && it[0] == '"' {
			var s string
			if err := json.Unmarshal(it, &s); err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			out = append(out, moderationInput{msgs: user(s)})
			continue
		}
		// A content part (its keys read exactly: chatmsg.Part) or a
		// conversation ("messages", exactly; never beside a part's keys,
		// which would leave the part's text unread).
		var part chatmsg.Part
		var keys map[string]json.RawMessage
		err := json.Unmarshal(it, &part)
		if err == nil {
			err = json.Unmarshal(it, &keys)
		}
		if err != nil {
			return nil, fmt.Errorf("input[%d]: want a string, a text part or {\"messages\": [...]}: %w", i, err)
		}
		_, isConv := keys["messages"]
		if isConv && len(keys) > 1 {
			return nil, fmt.Errorf("input[%d]: a conversation is {\"messages\": [...]} alone, without other keys", i)
		}
		switch {
		case isConv:
			in, err := parseConversation(it)
			if err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			out = append(out, in)
		case part.Type != "":
			// A content part: judged when it carries text (chatmsg.Part),
			// noted when it does not (an image, audio).
			if t, ok := part.Judged(); ok {
				parts = append(parts, t)
			} else {
				partSkips.Add(part.Type)
			}
			nparts++
		default:
			return nil, fmt.Errorf("input[%d]: want a string, a text part or {\"messages\": [...]}", i)
		}
	}
	if nparts > 0 {
		if len(out) > 0 {
			return nil, errors.New("input: content parts and other inputs cannot be mixed")
		}
		in := moderationInput{skipped: partSkips}
		if len(parts) > 0 {
			in.msgs = user(strings.Join(parts, "\n"))
		}
		out = append(out, in)
	}
	return out, nil
}

// parseConversation reads {"messages": [...]} with OpenAI messages
// (chatmsg.Conversation: every part but media judged, tool calls part of
// the assistant's turn), laid out by moderatedTurns.
func parseConversation(raw json.RawMessage) (moderationInput, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return moderationInput{}, err
	}
	if _, ok := keys["messages"]; !ok || len(keys) != 1 {
		return moderationInput{}, errors.New(`a conversation is {"messages": [...]} alone`)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(keys["messages"], &raws); err != nil {
		return moderationInput{}, fmt.Errorf(`"messages": %w`, err)
	}
	if len(raws) == 0 {
		return moderationInput{}, errors.New(`"messages" is empty`)
	}
	var skipped chatmsg.Skipped
	// The assistant's turns after the last user turn are the response.
	turns, err := chatmsg.Conversation(raws, &skipped)
	if err != nil {
		return moderationInput{}, err
	}
	msgs, results := moderatedTurns(turns)
	if len(msgs) == 0 {
		return moderationInput{}, errors.New(`"messages" has no system, user or assistant message to judge`)
	}
	if len(skipped) > 0 && !hasText(msgs) && results == nil {
		// Nothing but parts the guard cannot read (an image alone): not
		// judged, as the same parts outside a conversation are.
		return moderationInput{skipped: skipped}, nil
	}
	// A system message with no user message after it is refused (its
	// text would be judged as neither the prompt nor the answer).
	userAfter := false
	for i := len(turns) - 1; i >= 0; i-- {
		switch turns[i].Role {
		case "user":
			userAfter = true
		case "system":
			if !userAfter {
				return moderationInput{}, fmt.Errorf("messages[%d]: a system message with no user message after it: a conversation ends with a user turn, then the response and its tool results", i)
			}
		}
	}
	return moderationInput{msgs: msgs, skipped: skipped, results: results}, nil
}

// moderatedTurns lays a conversation out for judging: the turns up to the
// last user turn as the template renders them (tool results in it as
// tool-response user turns), and after it the response, whose assistant
// turns a tool result separated (the call, then the answer) are one turn.
// The tool results there are neither the user's turn nor the model's
// answer, yet the model reads them (a fetched page, a file): results is
// the prompt followed by one user turn holding them, laid out as the
// template lays tool results out, to be judged on its own (as the proxy
// judges what follows the last user turn); nil when there are none with
// text.
func moderatedTurns(turns []tokenizer.Message) (msgs, results []tokenizer.Message) {
	last := chatmsg.LastUser(turns)
	prompt := turns[:last+1]
	out := slices.Clip(slices.Clone(prompt))
	var tools []tokenizer.Message
	afterTool := false
	for _, m := range turns[last+1:] {
		if m.Role == chatmsg.ToolRole {
			tools = append(tools, m)
			afterTool = true
			continue
		}
		if n := len(out); afterTool && n > 0 && m.Role == "assistant" && out[n-1].Role == "assistant" {
			// The calls, then the answer: the earlier turn's calls are
			// written out as text, so that they come first.
			prev := &out[n-1]
			prev.Content = chatmsg.Join(chatmsg.WithCalls(*prev), m.Content)
			prev.ToolCalls = m.ToolCalls
			prev.ReasoningContent = chatmsg.Join(prev.ReasoningContent, m.ReasoningContent)
		} else {
			out = append(out, m)
		}
		afterTool = false
	}
	// What the model reads that neither the prompt's rendering nor the
	// response holds: the tool results after the last user turn (one run
	// of tool turns, which the template writes as one user turn).
	var extra []tokenizer.Message
	if hasText(tools) {
		extra = append(extra, tools...)
	}
	if len(extra) > 0 {
		results = append(slices.Clip(prompt), extra...)
	}
	return out, results
}

// hasText reports whether any message carries text that is not white space.
func hasText(msgs []tokenizer.Message) bool {
	for _, m := range msgs {
		if strings.TrimSpace(m.Content) != "" || strings.TrimSpace(m.ReasoningContent) != "" {
			return true
		}
	}
	return false
}

// moderationResult is one result: OpenAI's fields plus Qwen3Guard's.
// Categories, CategoryScores and CategoryAppliedInputTypes are keyed by
// OpenAI's category names (openAICategory); the model's own labels are in
// Qwen3Guard.
type moderationResult struct {
	Flagged                   bool                `json:"flagged"`
	Categories                map[string]bool     `json:"categories"`
	CategoryScores            map[string]float32  `json:"category_scores"`
	CategoryAppliedInputTypes map[string][]string `json:"category_applied_input_types"`
	// RiskLevel, Category and the probabilities are those of the deciding
	// verdict: the tool results' when they alone flagged; otherwise the
	// response token that flagged (or ended the decisive run), else the
	// prompt when it is flagged, else the most risky verdict. Category is
	// empty when the level is the safe one. They use the model's labels.
	RiskLevel             string             `json:"risk_level"`
	Category              string             `json:"category"`
	RiskProbabilities     map[string]float32 `json:"risk_probabilities"`
	CategoryProbabilities map[string]float32 `json:"category_probabilities"`
	Qwen3Guard            qwen3GuardDetail   `json:"qwen3guard"`
}

type qwen3GuardDetail struct {
	// Categories and CategoryScores are keyed by the model's labels.
	Categories     map[string]bool      `json:"categories"`
	CategoryScores map[string]float32   `json:"category_scores"`
	Prompt         *guard.PromptVerdict `json:"prompt"`
	Response       *responseDetail      `json:"response,omitempty"`
	// ToolResults is the verdict on a conversation's tool results after
	// its last user turn, judged as one more user turn after the prompt.
	ToolResults *guard.PromptVerdict `json:"tool_results,omitempty"`
	// Skipped lists the content part types the guard did not judge (it
	// judges text only).
	Skipped []string `json:"skipped,omitempty"`
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

// openAICategories are the categories of OpenAI's moderation results; each
// is a key of every result, false and 0 when no label of the model maps to
// it (documented in docs/API.md).
var openAICategories = []string{"harassment", "harassment/threatening", "hate", "hate/threatening",
	"illicit", "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions",
	"sexual", "sexual/minors", "violence", "violence/graphic"}

// qwen3GuardToOpenAI maps Qwen3Guard's category labels (lower-cased) to
// OpenAI's names. The others (Politically Sensitive Topics, PII, Copyright
// Violation, Unethical Acts, Jailbreak, and any label of another model)
// keep their own names as keys.
var qwen3GuardToOpenAI = map[string]string{
	"violent":                       "violence",
	"sexual content or sexual acts": "sexual",
	"suicide & self-harm":           "self-harm",
	"non-violent illegal acts":      "illicit",
}

// openAICategory is the key of a model label in OpenAI's categories.
func openAICategory(label string) string {
	if k, ok := qwen3GuardToOpenAI[strings.ToLower(strings.TrimSpace(label))]; ok {
		return k
	}
	return label
}

func (srv *Server) moderations(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var req moderationRequest
	if err := decodeJSON(r, &req); err != nil {
		srv.writeError(w, err)
		return
	}
	inputs, err := parseModerationInput(req.Input)
	if err != nil {
		srv.writeError(w, paramError{"input", badRequest{err}})
		return
	}
	results, err := srv.moderate(r.Context(), t, inputs)
	if err != nil {
		// The input's fault (too long, a conversation the chat template
		// cannot lay out) names it.
		var br badRequest
		if errors.As(err, &br) {
			err = paramError{"input", err}
		}
		srv.writeError(w, lengthParam(err, "input"))
		return
	}
	writeJSON(w, http.StatusOK, moderationResponse{ID: "modr-" + requestID(r.Context()), Model: srv.name, Results: results})
}

// conversationVerdict is one judged conversation.
type conversationVerdict struct {
	prompt   *guard.PromptVerdict
	tokens   []guard.TokenVerdict // judged response tokens
	response *responseDetail
}

// judge runs each conversation on its own stream: all submitted to the
// scheduler at once, so that they share steps (several inputs of a
// moderation request, each counted as one of the tenant's streams), or,
// with oneStream, one after the other (the parts of one request, which
// count as one stream).
// names, when not nil, are the streams' names in the audit log (else
// modr-ID-i, ID the request's X-Request-Id).
func (srv *Server) judge(ctx context.Context, t *Tenant, convs [][]tokenizer.Message, oneStream bool, names []string) ([]conversationVerdict, error) {
	out := make([]conversationVerdict, len(convs))
	errs := make([]error, len(convs))
	rid := requestID(ctx)
	var wg sync.WaitGroup
	for i, msgs := range convs {
		run := wg.Go
		if oneStream {
			if i > 0 && errs[i-1] != nil {
				break // the request is refused: judge nothing more of it
			}
			run = func(f func()) { f() }
		}
		run(func() {
			// The audit records name the request (X-Request-Id).
			name := fmt.Sprintf("modr-%s-%d", rid, i)
			if names != nil {
				name = names[i]
			}
			c, err := srv.openConvo(t, name, 0)
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
				v.tokens = tokensOrEmpty(res.Tokens)
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

func (srv *Server) moderate(ctx context.Context, t *Tenant, inputs []moderationInput) ([]moderationResult, error) {
	var convs, results [][]tokenizer.Message
	var convNames, resultNames []string // input N's streams: modr-ID-N, modr-ID-N-results
	rid := requestID(ctx)
	for i, in := range inputs {
		if in.msgs != nil {
			convs = append(convs, in.msgs)
			convNames = append(convNames, fmt.Sprintf("modr-%s-%d", rid, i))
		}
		if in.results != nil {
			results = append(results, in.results)
			resultNames = append(resultNames, fmt.Sprintf("modr-%s-%d-results", rid, i))
		}
	}
	vs, err := srv.judge(ctx, t, convs, false, convNames)
	if err != nil {
		return nil, err
	}
	// Tool results after the conversations, not beside them: an input
	// holds one of the tenant's streams at a time.
	rvs, err := srv.judge(ctx, t, results, false, resultNames)
	if err != nil {
		return nil, err
	}
	out := make([]moderationResult, len(inputs))
	j, k := 0, 0
	for i, in := range inputs {
		if in.msgs == nil {
			out[i] = srv.result(nil, nil, in.skipped)
			continue
		}
		var rv *conversationVerdict
		if in.results != nil {
			rv = &rvs[k]
			k++
			if n := len(rv.prompt.Turns); n > 0 {
				// Judged every turn (Policy.EveryTurn): the prompt's own
				// turns were judged with the conversation; the tool
				// results' verdict is their own turn's, the last.
				last := rv.prompt.Turns[n-1]
				rv = &conversationVerdict{prompt: &last}
			}
		}
		out[i] = srv.result(&vs[j], rv, in.skipped)
		j++
	}
	return out, nil
}

// result turns a judged conversation into OpenAI's result. A category's
// score is the largest, over the verdicts, of P(not safe) × P(category);
// the category labels are the model's (response categories, then the
// query-only ones), in qwen3guard, and OpenAI's names (openAICategory) in
// categories and category_scores. A nil v is an input with nothing to
// judge: not flagged, every score 0. rv, when not nil, is the verdict on
// the conversation's tool results after its last user turn.
func (srv *Server) result(v, rv *conversationVerdict, skipped []string) moderationResult {
	cats, scores := map[string]bool{}, map[string]float32{}
	for _, c := range srv.categories {
		cats[c], scores[c] = false, 0
	}
	var res moderationResult
	if v != nil {
		res = srv.verdictResult(v, rv, cats, scores)
	}
	res.Qwen3Guard.Categories, res.Qwen3Guard.CategoryScores, res.Qwen3Guard.Skipped = cats, scores, skipped
	res.Categories, res.CategoryScores = map[string]bool{}, map[string]float32{}
	res.CategoryAppliedInputTypes = map[string][]string{}
	for _, c := range openAICategories {
		res.Categories[c], res.CategoryScores[c], res.CategoryAppliedInputTypes[c] = false, 0, []string{}
	}
	for _, c := range srv.categories {
		k := openAICategory(c)
		res.Categories[k] = res.Categories[k] || cats[c]
		res.CategoryScores[k] = max(res.CategoryScores[k], scores[c])
		if v != nil {
			res.CategoryAppliedInputTypes[k] = []string{"text"}
		} else if _, ok := res.CategoryAppliedInputTypes[k]; !ok {
			res.CategoryAppliedInputTypes[k] = []string{}
		}
	}
	return res
}

// verdictResult fills the model-label categories and scores of a judged
// conversation (and its tool results, rv, when not nil) and returns the
// result's other fields.
func (srv *Server) verdictResult(v, rv *conversationVerdict, cats map[string]bool, scores map[string]float32) moderationResult {
	l := srv.info.Labels
	res := moderationResult{Qwen3Guard: qwen3GuardDetail{Prompt: v.prompt, Response: v.response}}
	score := func(vd *guard.Verdict, labels []string) {
		risky := 1 - vd.RiskProbs[0]
		for j, c := range labels {
			if s := risky * vd.CategoryProbs[j]; s > scores[c] {
				scores[c] = s
			}
		}
	}
	score(&v.prompt.Verdict, l.QueryCategory)
	for i := range v.tokens {
		score(&v.tokens[i].Verdict, l.ResponseCategory)
	}
	if rv != nil {
		res.Qwen3Guard.ToolResults = rv.prompt
		score(&rv.prompt.Verdict, l.QueryCategory)
	}

	// The deciding verdict.
	dv, fromPrompt := &v.prompt.Verdict, true
	decided := false
	if r := v.response; r != nil {
		at := r.FlaggedIndex
		if at < 0 && !v.prompt.Flagged && (rv == nil || !rv.prompt.Flagged) {
			// Nothing flagged: the run the decision names (a loose
			// policy's Controversial one) is the reason given. Where the
			// prompt or the tool results flagged, theirs is.
			at = r.Decision.Index
		}
		if at >= 0 && at < len(v.tokens) {
			dv, fromPrompt, decided = &v.tokens[at].Verdict, false, true
		}
	}
	responseFlagged := v.response != nil && v.response.Flagged
	switch {
	case rv != nil && rv.prompt.Flagged && !responseFlagged && !v.prompt.Flagged:
		// Only the tool results flagged: theirs decides.
		dv, fromPrompt = &rv.prompt.Verdict, true
	case !decided && !v.prompt.Flagged:
		for i := range v.tokens {
			if t := &v.tokens[i].Verdict; t.RiskProbs[0] < dv.RiskProbs[0] {
				dv, fromPrompt = t, false
			}
		}
		if rv != nil && rv.prompt.RiskProbs[0] < dv.RiskProbs[0] {
			dv, fromPrompt = &rv.prompt.Verdict, true
		}
	}
	riskLabels, catLabels := l.QueryRisk, l.QueryCategory
	if !fromPrompt {
		riskLabels, catLabels = l.ResponseRisk, l.ResponseCategory
	}
	// The level the tenant's policy applied (a threshold can flag a verdict
	// whose likeliest level is Safe, or keep an Unsafe one below it).
	res.RiskLevel, res.Category = dv.Level, categoryOf(*dv)
	res.RiskProbabilities = probMap(riskLabels, dv.RiskProbs)
	res.CategoryProbabilities = probMap(catLabels, dv.CategoryProbs)

	res.Flagged = v.prompt.Flagged
	if v.prompt.Flagged {
		cats[v.prompt.Category] = true
	}
	if r := v.response; r != nil && r.Flagged {
		res.Flagged = true
		cats[v.tokens[r.FlaggedIndex].Category] = true
	}
	if rv != nil && rv.prompt.Flagged {
		res.Flagged = true
		cats[rv.prompt.Category] = true
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
