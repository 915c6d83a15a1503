// Package extproc serves Envoy's External Processing API
// (envoy.service.ext_proc.v3.ExternalProcessor) so that an Envoy-based
// gateway (Envoy Gateway, Envoy AI Gateway, Istio) has its OpenAI chat
// completions judged by streamguard token by token, with the same rules,
// answers and audit records as the chat-completions proxy
// (internal/proxy, through proxy.External).
//
// # One exchange, one gRPC stream
//
// Envoy opens a stream per HTTP request and sends its parts as they come:
//
//   - request headers: the path is read as upstreams route it
//     (percent-decoded, slashes merged, dot segments resolved, without the
//     query). A POST to .../completions (the legacy completions API,
//     whose text the guard does not parse) is refused (403), and so is a
//     path read as the chat API one way and the Responses API another. A
//     POST to .../responses is judged as the Responses API
//     (proxy.External.StartResponses). A request other than POST
//     .../chat/completions or .../responses passes untouched, its bodies
//     not sent (mode override NONE).
//     Otherwise the Admitter authenticates the tenant key
//     (Authorization or X-Api-Key) and applies the tenant's limits (the
//     server's, internal/server); a refusal is an ImmediateResponse (401,
//     429). The answer removes streamguard's credentials from the upstream
//     request and sets its Authorization as the proxy does
//     (proxy.UpstreamHeaders).
//   - request body (BUFFERED, BUFFERED_PARTIAL, STREAMED or
//     FULL_DUPLEX_STREAMED): gathered whole (streamed chunks are held back
//     from the upstream), then parsed and the prompt judged (proxy's
//     rules: strict JSON, n=1, ...). A refused request gets an
//     ImmediateResponse with the proxy's answer: an OpenAI error, or the
//     refusal completion, streamed or not as the request asked.
//   - response headers: an upstream error status passes; an event stream
//     is relayed, anything else judged whole. Headers X-Streamguard-* are
//     added. Where the filter allows mode overrides, the response body
//     mode is set for the kind of response (BUFFERED for a whole JSON
//     answer, so that a flagged one can become a 400; NONE for what
//     passes). A response whose body the filter would not send
//     (response_body_mode NONE, with no evidence that overrides are
//     honoured) is refused while its headers are held.
//   - the filter's configuration comes in protocol_config (Envoy 1.34 and
//     later); without it, the documented one is assumed, and a body that
//     contradicts it in a way that could let text through unjudged (a
//     whole answer asked BUFFERED that comes in pieces) is refused. So is
//     a BUFFERED_PARTIAL chunk that is not the whole body, and any
//     message whose headers never came (a body without its request or
//     response headers, a repeated headers message).
//   - response body: an event stream is parsed and judged per token
//     (proxy.Relay: hold-back or pass-through, the cut with
//     finish_reason "content_filter" and [DONE]); what each answer's body
//     mutation carries is what the client gets. In STREAMED mode every
//     chunk is answered in order with the text released so far: in
//     hold-back the service waits up to Config.ChunkWait for the chunk's
//     verdicts (less when the next chunk is already there), and text still
//     held goes out with a later answer. In FULL_DUPLEX_STREAMED mode text
//     goes out as soon as it is released. A whole response is judged at
//     its end.
//
// When the gRPC stream ends (the client went away, Envoy gave up), the
// call is closed and its guard stream released.
package extproc
