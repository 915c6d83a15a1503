package proxy

import (
	"context"
	"net/http"
	"strconv"

	"github.com/streamguard/streamguard/guard"
)

// judgePrompt judges the last user turn in the context of the conversation
// before it. A conversation that does not fit the guard's stream is the
// client's error (the caller answers 400), unless the tenant opted in to
// TrimLongPrompt: then the system turn and the last user turn are judged
// alone (a failed JudgePrompt leaves the stream as it was), and a
// conversation that still does not fit is refused all the same.
func judgePrompt(ctx context.Context, s Stream, msgs []guard.Message, trim bool) (*guard.PromptVerdict, error) {
	pv, err := s.JudgePrompt(ctx, msgs)
	if err == nil || !trim || !isContextLength(err) || ctx.Err() != nil {
		return pv, err
	}
	var short []guard.Message
	if msgs[0].Role == "system" {
		short = append(short, msgs[0])
	}
	short = append(short, msgs[len(msgs)-1])
	if len(short) == len(msgs) {
		return nil, err
	}
	return s.JudgePrompt(ctx, short)
}

// promptTooLong refuses a conversation the guard cannot hold: the
// client's error, answered like OpenAI's own, whatever the tenant's
// fail-open (forwarding it unjudged would let any client skip the guard).
func (x *exchange) promptTooLong(err error) {
	param := x.h.api.param()
	x.fail(http.StatusBadRequest, EventContextLength, apiError{
		Message: "streamguard: the conversation is longer than the safety guard's context; shorten the " + param + " (" + err.Error() + ")",
		Type:    typeInvalidRequest, Param: &param, Code: EventContextLength})
}

// promptLong reports a prompt judgement refused for its length (not for a
// request that ended meanwhile).
func (x *exchange) promptLong(err error) bool {
	return err != nil && isContextLength(err) && x.ctx.Err() == nil
}

// answerPrompt answers a prompt judgement that stops the request: too long
// for the guard (the client's error), a guard failure, or a flagged prompt.
func (x *exchange) answerPrompt(pv *guard.PromptVerdict, err error) {
	switch {
	case x.promptLong(err):
		x.promptTooLong(err)
	case err != nil:
		x.guardFailed(err)
	default:
		x.refusePrompt(pv)
	}
}

// refusePrompt answers a flagged prompt without calling the upstream.
func (x *exchange) refusePrompt(pv *guard.PromptVerdict) {
	attrs := verdictAttrs(&pv.Verdict, -1)
	info := &cutInfo{Reason: EventPromptFlagged, Token: -1, Level: pv.Level, Category: pv.Category, Request: x.id}
	if x.t.Refusal != RefusalCompletion {
		param := x.h.api.param()
		x.fail(http.StatusBadRequest, EventPromptFlagged, apiError{
			Message: "streamguard: the prompt was flagged (" + pv.Level + ", " + pv.Category + ")",
			Type:    typeInvalidRequest, Param: &param, Code: finishContentFilter, Flag: info}, attrs...)
		return
	}
	x.h.api.refuse(x, x.t.refusalMessage(), info)
	x.finish(EventPromptFlagged, attrs...)
}

// refuseCompletion answers a flagged prompt as a chat completion: msg as
// the assistant's answer, finish_reason content_filter.
func (x *exchange) refuseCompletion(msg string, info *cutInfo) {
	meta := syntheticMeta(x.id, x.req.Model)
	h := x.w.Header()
	if x.req.Stream {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write(deltaChunk(meta, 0, map[string]any{"role": "assistant", "content": msg}))
		_, _ = x.w.Write(finishChunk(meta, 0, finishContentFilter, info))
		if x.req.IncludeUsage {
			_, _ = x.w.Write(usageChunk(meta, guardUsage(0), "guard"))
		}
		_, _ = x.w.Write(doneEvent)
	} else {
		meta.Object = "chat.completion"
		reason := finishContentFilter
		body := mustJSON(struct {
			chunkMeta
			Choices []struct {
				Index        int            `json:"index"`
				Message      map[string]any `json:"message"`
				FinishReason *string        `json:"finish_reason"`
			} `json:"choices"`
			Usage       map[string]int `json:"usage"`
			Streamguard *cutInfo       `json:"streamguard"`
		}{chunkMeta: meta, Choices: []struct {
			Index        int            `json:"index"`
			Message      map[string]any `json:"message"`
			FinishReason *string        `json:"finish_reason"`
		}{{Message: map[string]any{"role": "assistant", "content": msg}, FinishReason: &reason}},
			Usage:       map[string]int{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
			Streamguard: info})
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		x.w.WriteHeader(http.StatusOK)
		_, _ = x.w.Write(body)
	}
}
