package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
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
	convs, skipped, err := litellmConversations(&req)
	if err != nil {
		srv.writeError(w, badRequest{err})
		return
	}
	setSkipped(w, skipped)
	if convs == nil {
		writeJSON(w, http.StatusOK, litellmResponse{Action: "NONE"}) // nothing to judge (images only)
		return
	}
	vs, err := srv.judge(r.Context(), t, convs)
	if err != nil {
		param := "texts"
		if len(req.StructuredMessages) > 0 {
			param = "structured_messages"
		}
		srv.writeError(w, lengthParam(err, param))
		return
	}
	resp := litellmResponse{Action: "NONE"}
	for i, v := range vs {
		what := "prompt"
		if i > 0 {
			what = "text after the last user turn"
		}
		// A response call blocks on the prompt too, as /v1/moderations
		// flags the conversation on either.
		switch {
		case v.response != nil && v.response.Flagged:
			tv := v.tokens[v.response.FlaggedIndex]
			resp = litellmResponse{Action: "BLOCKED", BlockedReason: fmt.Sprintf("streamguard: response flagged %s at token %d", flagReason(tv.Verdict), tv.Index)}
		case v.prompt.Flagged:
			resp = litellmResponse{Action: "BLOCKED", BlockedReason: fmt.Sprintf("streamguard: %s flagged %s", what, flagReason(v.prompt.Verdict))}
		}
		if resp.Action == "BLOCKED" {
			break
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// litellmConversations builds the conversations to judge. A request is the
// conversation up to its last user turn (the structured messages, or else
// the texts as one user turn); text the messages carry after that turn (an
// assistant's words beside a tool call, a late system message) goes to the
// model too, so it is judged as well, as one more user turn after the
// conversation: a second conversation. A response is judged as the
// assistant turn after the structured messages' last user turn; without
// them there is no user turn to anchor the response heads, so the texts
// are judged as a prompt instead. Tool and function messages, non-text
// content parts and images are skipped and noted (as in /v1/moderations
// and the proxy).
func litellmConversations(req *litellmRequest) ([][]tokenizer.Message, chatmsg.Skipped, error) {
	var skipped chatmsg.Skipped
	if len(req.Images) > 0 {
		skipped.Add("images")
	}
	msgs, err := chatmsg.Conversation(req.StructuredMessages, &skipped)
	if err != nil {
		return nil, nil, fmt.Errorf("structured_%w", err)
	}
	lastUser := chatmsg.LastUser(msgs)
	text := strings.Join(req.Texts, "\n")
	one := func(m []tokenizer.Message) [][]tokenizer.Message { return [][]tokenizer.Message{m} }
	switch req.InputType {
	case "request", "":
		if lastUser >= 0 {
			convs := one(msgs[:lastUser+1])
			if after := chatmsg.Trailing(msgs[lastUser+1:]); after != "" {
				convs = append(convs, append(msgs[:lastUser+1:lastUser+1], tokenizer.Message{Role: "user", Content: after}))
			}
			return convs, skipped, nil
		}
		if strings.TrimSpace(text) == "" {
			// No user turn and no texts: the messages' own text (a
			// system or assistant message alone) still goes to the model.
			text = chatmsg.Trailing(msgs)
		}
		if strings.TrimSpace(text) == "" {
			return nil, skipped, nil
		}
		return one([]tokenizer.Message{{Role: "user", Content: text}}), skipped, nil
	case "response":
		if strings.TrimSpace(text) == "" {
			return nil, skipped, nil
		}
		if lastUser >= 0 {
			return one(append(msgs[:lastUser+1:lastUser+1], tokenizer.Message{Role: "assistant", Content: text})), skipped, nil
		}
		return one([]tokenizer.Message{{Role: "user", Content: text}}), skipped, nil
	}
	return nil, nil, errors.New(`input_type must be "request" or "response"`)
}

// setSkipped notes what was not judged in the X-Streamguard-Skipped header.
func setSkipped(w http.ResponseWriter, skipped chatmsg.Skipped) {
	if len(skipped) > 0 {
		w.Header().Set("X-Streamguard-Skipped", strings.Join(skipped, ", "))
	}
}

// flagReason says why a flagged verdict was flagged: its level and
// category, or the tenant's threshold on its category when that decided a
// level other than the likeliest one.
func flagReason(v guard.Verdict) string {
	if v.Level != v.Risk {
		return fmt.Sprintf("by the tenant's threshold for %s (p(%s)=%.2f)", v.Category, v.Risk, v.RiskProb)
	}
	return fmt.Sprintf("%s (%s, p=%.2f)", v.Risk, v.Category, v.RiskProb)
}
