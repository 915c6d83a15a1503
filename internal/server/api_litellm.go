package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// LiteLLM's Generic Guardrail API (POST /beta/litellm_basic_guardrail_api):
// LiteLLM sends the texts it extracted from a request (input_type
// "request") or from a model's answer ("response"), and, when it has them,
// the chat messages (structured_messages). The answer's action is BLOCKED
// (with blocked_reason) or NONE; streamguard never rewrites text, so it
// never answers GUARDRAIL_INTERVENED.

type litellmRequest struct {
	Texts              []string          `json:"texts"`
	Images             []string          `json:"images"`
	StructuredMessages []json.RawMessage `json:"structured_messages"`
	InputType          string            `json:"input_type"`
	LitellmCallID      *string           `json:"litellm_call_id"`
	LitellmTraceID     *string           `json:"litellm_trace_id"`
	RequestData        map[string]any    `json:"request_data"`
	AdditionalParams   map[string]any    `json:"additional_provider_specific_params"`
}

type litellmResponse struct {
	Action        string `json:"action"`
	BlockedReason string `json:"blocked_reason,omitempty"`
}

func (srv *Server) litellm(w http.ResponseWriter, r *http.Request, t *Tenant) {
	var req litellmRequest
	if err := decodeJSON(r, &req); err != nil {
		srv.writeError(w, err)
		return
	}
	msgs, skipped, err := litellmConversation(&req)
	if err != nil {
		srv.writeError(w, badRequest{err})
		return
	}
	setSkipped(w, skipped)
	if msgs == nil {
		writeJSON(w, http.StatusOK, litellmResponse{Action: "NONE"}) // nothing to judge (images only)
		return
	}
	vs, err := srv.judge(r.Context(), t, [][]tokenizer.Message{msgs})
	if err != nil {
		param := "texts"
		if len(req.StructuredMessages) > 0 {
			param = "structured_messages"
		}
		srv.writeError(w, lengthParam(err, param))
		return
	}
	v := vs[0]
	resp := litellmResponse{Action: "NONE"}
	switch {
	case v.response != nil && v.response.Flagged:
		tv := v.tokens[v.response.FlaggedIndex]
		resp = litellmResponse{Action: "BLOCKED", BlockedReason: fmt.Sprintf("streamguard: response flagged %s (%s) at token %d", tv.Risk, tv.Category, tv.Index)}
	case v.response == nil && v.prompt.Flagged:
		resp = litellmResponse{Action: "BLOCKED", BlockedReason: fmt.Sprintf("streamguard: prompt flagged %s (%s, p=%.2f)", v.prompt.Risk, v.prompt.Category, v.prompt.RiskProb)}
	}
	writeJSON(w, http.StatusOK, resp)
}

// litellmConversation builds the conversation to judge. A request is the
// conversation up to its last user turn (the structured messages, or else
// the texts as one user turn). A response is judged as the assistant turn
// after the structured messages' last user turn; without them there is no
// user turn to anchor the response heads, so the texts are judged as a
// prompt instead. Tool and function messages, non-text content parts and
// images are skipped and noted (as in /v1/moderations and the proxy).
func litellmConversation(req *litellmRequest) ([]tokenizer.Message, skipNote, error) {
	var msgs []tokenizer.Message
	var skipped skipNote
	if len(req.Images) > 0 {
		skipped.add("images")
	}
	afterTool := false
	for i, raw := range req.StructuredMessages {
		m, ok, err := parseMessage(raw, &skipped)
		if err != nil {
			return nil, nil, fmt.Errorf("structured_messages[%d]: %w", i, err)
		}
		if ok {
			msgs = appendTurn(msgs, m, afterTool)
		}
		afterTool = !ok
	}
	lastUser := -1
	for i, m := range msgs {
		if m.Role == "user" && strings.TrimSpace(m.Content) != "" {
			lastUser = i
		}
	}
	text := strings.Join(req.Texts, "\n")
	switch req.InputType {
	case "request", "":
		if lastUser >= 0 {
			return msgs[:lastUser+1], skipped, nil
		}
		if strings.TrimSpace(text) == "" {
			return nil, skipped, nil
		}
		return []tokenizer.Message{{Role: "user", Content: text}}, skipped, nil
	case "response":
		if strings.TrimSpace(text) == "" {
			return nil, skipped, nil
		}
		if lastUser >= 0 {
			return append(msgs[:lastUser+1:lastUser+1], tokenizer.Message{Role: "assistant", Content: text}), skipped, nil
		}
		return []tokenizer.Message{{Role: "user", Content: text}}, skipped, nil
	}
	return nil, nil, errors.New(`input_type must be "request" or "response"`)
}

// setSkipped notes what was not judged in the X-Streamguard-Skipped header.
func setSkipped(w http.ResponseWriter, skipped skipNote) {
	if len(skipped) > 0 {
		w.Header().Set("X-Streamguard-Skipped", strings.Join(skipped, ", "))
	}
}
