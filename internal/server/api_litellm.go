package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/safecache"
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
	// Tools are the request's tool definitions; ToolCalls the tool calls
	// LiteLLM found in the request's messages or the model's answer.
	Tools            json.RawMessage `json:"tools"`
	ToolCalls        json.RawMessage `json:"tool_calls"`
	InputType        string          `json:"input_type"`
	LitellmCallID    *string         `json:"litellm_call_id"`
	LitellmTraceID   *string         `json:"litellm_trace_id"`
	RequestData      map[string]any  `json:"request_data"`
	AdditionalParams map[string]any  `json:"additional_provider_specific_params"`
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
	convs, declared, skipped, err := litellmConversations(&req)
	if err != nil {
		srv.writeError(w, badRequest{err})
		return
	}
	// Tool definitions judged safe for the tenant before are not judged
	// again (an agent sends the same ones with every request).
	var declKey [32]byte
	if declared {
		d := convs[len(convs)-1][0].Content
		if declKey = safecache.Key(t.Name, t.Policy, d); srv.declared.Has(declKey) {
			convs, declared = convs[:len(convs)-1], false
		}
	}
	setSkipped(w, skipped)
	if convs == nil {
		writeJSON(w, http.StatusOK, litellmResponse{Action: "NONE"}) // nothing to judge (images only)
		return
	}
	vs, err := srv.judge(r.Context(), t, convs, true, nil)
	if err != nil {
		param := "texts"
		if len(req.StructuredMessages) > 0 {
			param = "structured_messages"
		}
		srv.writeError(w, lengthParam(err, param))
		return
	}
	if declared && !vs[len(vs)-1].prompt.Flagged {
		srv.declared.Add(declKey)
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
// the texts as one user turn); what else the model reads goes to it too,
// so it is judged as well, as one more user turn after the conversation (a
// second conversation): the messages' turns after that user turn (an
// assistant's words and tool calls, tool results, a late system message),
// the reasoning the template keeps, the tool calls LiteLLM lists, and any
// of the texts the messages do not hold; and the tool definitions alone,
// together, as a user turn (a third). A response is judged as the assistant
// turn after the structured messages' last user turn, its text being the
// texts and tool calls; without a user turn there is none to anchor the
// response heads, so it is judged as a prompt instead. Non-text content
// parts and images are skipped and noted (as in /v1/moderations and the
// proxy).
//
// The tool definitions' conversation, when there is one, is the last, and
// declared reports it.
func litellmConversations(req *litellmRequest) (convs [][]tokenizer.Message, declared bool, skipped chatmsg.Skipped, err error) {
	if len(req.Images) > 0 {
		skipped.Add("images")
	}
	msgs, err := chatmsg.Conversation(req.StructuredMessages, &skipped)
	if err != nil {
		return nil, false, nil, fmt.Errorf("structured_%w", err)
	}
	calls, other, err := chatmsg.ToolCalls(req.ToolCalls, nil)
	if err != nil {
		return nil, false, nil, fmt.Errorf("tool_calls: %w", err)
	}
	callsText := chatmsg.Join(tokenizer.ToolCallsText(calls, false), other)
	defs, err := chatmsg.Definitions([]json.RawMessage{req.Tools})
	if err != nil {
		return nil, false, nil, err
	}
	lastUser := chatmsg.LastUser(msgs)
	text := strings.Join(req.Texts, "\n")
	one := func(m []tokenizer.Message) [][]tokenizer.Message { return [][]tokenizer.Message{m} }
	switch req.InputType {
	case "request", "":
		if lastUser >= 0 {
			prompt := msgs[:lastUser+1]
			convs := one(prompt)
			parts := []string{chatmsg.Beyond(msgs, lastUser), callsText}
			held := judgedStrings(msgs, lastUser)
			for _, t := range req.Texts {
				if strings.TrimSpace(t) != "" && !held[t] {
					parts = append(parts, t)
				}
			}
			after := chatmsg.Join(parts...)
			if strings.TrimSpace(after) != "" {
				convs = append(convs, append(prompt[:len(prompt):len(prompt)], tokenizer.Message{Role: "user", Content: after}))
			}
			if len(defs) > 0 {
				// All together: halves judged apart could each hold half
				// of an instruction. A list longer than the stream is
				// refused, as a long conversation is.
				convs = append(convs, []tokenizer.Message{{Role: "user", Content: strings.Join(defs, "\n")}})
			}
			return convs, len(defs) > 0, skipped, nil
		}
		// No user turn: the messages' own text (a system or assistant
		// message alone), the texts, the tools and the calls still go to
		// the model, as one prompt.
		text = chatmsg.Join(chatmsg.Join(chatmsg.Join(strings.Join(defs, "\n"), chatmsg.Trailing(msgs)), text), callsText)
		if strings.TrimSpace(text) == "" {
			return nil, false, skipped, nil
		}
		return one([]tokenizer.Message{{Role: "user", Content: text}}), false, skipped, nil
	case "response":
		text = chatmsg.Join(text, other)
		if strings.TrimSpace(text) == "" && len(calls) == 0 {
			return nil, false, skipped, nil
		}
		if lastUser >= 0 {
			prompt := msgs[:lastUser+1]
			answer := tokenizer.Message{Role: "assistant", Content: text, ToolCalls: calls}
			return one(append(prompt[:len(prompt):len(prompt)], answer)), false, skipped, nil
		}
		return one([]tokenizer.Message{{Role: "user", Content: chatmsg.Join(text, tokenizer.ToolCallsText(calls, false))}}), false, skipped, nil
	}
	return nil, false, nil, errors.New(`input_type must be "request" or "response"`)
}

// judgedStrings is the texts the guard judges in turns, whole and line by
// line: each message's content, its tool calls' names and arguments, and
// the reasoning the guard reads (after the last user turn, and what the
// template keeps before it). A LiteLLM text found among them (a content string, most
// often, or a one-line part of it) is left to its message; any other is
// judged after the last user turn. A set, so that many texts against many
// messages cost one pass each (a substring search of every message for
// every text took 13 s for one request of 720 KB); only judged text, so
// that a text copied into a field the guard does not read (an image URL,
// a name, an id) is not taken for held.
func judgedStrings(turns []tokenizer.Message, lastUser int) map[string]bool {
	out := map[string]bool{}
	add := func(s string) {
		out[s] = true
		for line := range strings.SplitSeq(s, "\n") {
			out[line] = true
		}
	}
	for i, m := range turns {
		add(m.Content)
		if i > lastUser { // judged after the last user turn; before it, only what the template keeps
			add(m.ReasoningContent)
		}
		for _, c := range m.ToolCalls {
			add(c.Name)
			add(c.Arguments)
		}
	}
	add(chatmsg.KeptReasoning(turns, lastUser)) // in the prompt's layout
	return out
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
