package proxy

import "net/http"

// api is what differs between the two OpenAI APIs the proxy serves (chat
// completions, chatAPI; the Responses API, responsesAPI): where the
// upstream serves it, how a request is read, and how the proxy writes the
// answers and events of its own. Judging is the same for both: a request
// is read into a chatRequest, and an answer's text into the feeder.
type api interface {
	// path is the upstream route, after the base URL's /v1.
	path() string
	parseRequest(body []byte) (*chatRequest, error)
	// param is the request's member that holds the conversation (an
	// error's "param").
	param() string
	// refuse answers a flagged prompt in the refusal-completion form:
	// msg as the assistant's answer, cut for content_filter.
	refuse(x *exchange, msg string, info *cutInfo)
	judgeWhole(x *exchange, s Stream, resp *http.Response, body []byte)
	newStream(x *exchange) streamAPI
}

// streamAPI reads one streamed answer's events and writes the proxy's own
// events into it.
type streamAPI interface {
	// parse reads one upstream event strictly (see parsedEvent).
	parse(ev sseEvent) parsedEvent
	// sent notes an event that reached the client.
	sent(e *heldEvent)
	// partial is the event's text before fed offset cut, as an event of
	// its own (nil when none of it goes), noted as sent.
	partial(e *heldEvent, cut int) []byte
	// end is what ends a stream the proxy cuts: finish is
	// finishContentFilter or finishLength; judged counts the answer's
	// tokens the guard judged.
	end(finish string, info *cutInfo, judged int) []byte
	// errorEvent is an error after the stream started.
	errorEvent(e apiError) []byte
	// passOn is the upstream's own error event (parsedEvent.apiErr; info
	// is its parsedEvent.info) as the client gets it.
	passOn(ev sseEvent, info any) []byte
	// allowed says the answer was judged whole and went out uncut.
	allowed()
}

// chatAPI is the chat-completions API.
type chatAPI struct{}

func (chatAPI) path() string                                   { return "/chat/completions" }
func (chatAPI) param() string                                  { return "messages" }
func (chatAPI) parseRequest(body []byte) (*chatRequest, error) { return parseRequest(body) }
func (chatAPI) newStream(x *exchange) streamAPI                { return &chatStream{includeUsage: x.req.IncludeUsage} }
func (chatAPI) refuse(x *exchange, msg string, info *cutInfo)  { x.refuseCompletion(msg, info) }
func (chatAPI) judgeWhole(x *exchange, s Stream, resp *http.Response, body []byte) {
	x.judgeWhole(s, resp, body)
}

// chatStream is a streamed chat completion.
type chatStream struct {
	includeUsage bool
	meta         chunkMeta // the last chunk's, for the chunks the proxy writes
	usage        []byte    // the upstream's last usage object
}

// chatEventInfo is what a held chunk keeps for a partial delta at a cut:
// the reasoning field names it used.
type chatEventInfo struct{ reasoningContent, reasoning bool }

func (c *chatStream) parse(ev sseEvent) parsedEvent {
	p := parseEvent(ev)
	if p.isChunk && p.meta.ID != "" {
		c.meta = p.meta
	}
	if p.usage != nil {
		c.usage = p.usage
	}
	if p.hasText {
		p.info = chatEventInfo{p.text.ReasoningContent != nil, p.text.Reasoning != nil}
	}
	return p
}

func (c *chatStream) sent(*heldEvent) {}

func (c *chatStream) partial(e *heldEvent, cut int) []byte {
	info, _ := e.info.(chatEventInfo)
	t := e.text.partial(cut)
	delta := map[string]any{}
	if t[fieldContent] != "" {
		delta["content"] = t[fieldContent]
	}
	if t[fieldRefusal] != "" {
		delta["refusal"] = t[fieldRefusal]
	}
	if t[fieldReasoning] != "" {
		if info.reasoningContent || !info.reasoning {
			delta["reasoning_content"] = t[fieldReasoning]
		}
		if info.reasoning {
			delta["reasoning"] = t[fieldReasoning]
		}
	}
	if len(delta) == 0 {
		return nil
	}
	return deltaChunk(c.meta, 0, delta)
}

// end writes the finish chunk, then the usage chunk when the client asked
// for one (the upstream's last usage when it sent one, else the response
// tokens the guard judged; streamguard.usage says which: "upstream" or
// "guard"), then [DONE].
func (c *chatStream) end(finish string, info *cutInfo, judged int) []byte {
	out := finishChunk(c.meta, 0, finish, info)
	if c.includeUsage {
		if c.usage != nil {
			out = append(out, usageChunk(c.meta, c.usage, "upstream")...)
		} else {
			out = append(out, usageChunk(c.meta, guardUsage(judged), "guard")...)
		}
	}
	return append(out, doneEvent...)
}

func (c *chatStream) errorEvent(e apiError) []byte     { return errorEvent(e) }
func (c *chatStream) passOn(ev sseEvent, _ any) []byte { return ev.raw }
func (c *chatStream) allowed()                         {}
