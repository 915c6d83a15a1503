// Package proxy is an OpenAI-compatible proxy (chat completions and the
// Responses API, responses.go) that puts the guard between an application
// and any LLM: it judges the prompt before forwarding it, and judges the
// upstream's answer token by token as it streams, stopping it mid-stream
// when the guard flags it. What follows is said of chat completions; the
// Responses API differs only in its shapes (api.go).
//
// # Flow
//
// A request is judged before anything goes upstream: its last user turn
// (in the context of the conversation before it), what the model reads
// after that turn, and, alone, the tool definitions and schemas it
// declares. A flagged prompt is answered without calling the upstream,
// with an OpenAI-style error or a refusal completion (per tenant).
// Otherwise the request body is forwarded unchanged. The upstream's text
// deltas (reasoning_content or reasoning, then content and refusal, then
// tool calls' names and arguments: toolcall.go) are rendered as the Qwen3
// chat template renders an assistant turn and re-tokenized incrementally
// by the guard. All of it is text: a <think> block written in content is
// judged as the answer's text, and only the guard closes the think block
// (Stream.EndThinking).
//
// # Modes
//
// Hold-back releases an upstream event, byte for byte, only once every
// token of its text and a look-ahead of K more tokens were judged, so no
// token of the run that flags a response ever reaches the client (and a
// tool call goes out only once all of it was judged); when the
// response is flagged, the text before that run is sent and the stream
// ends with finish_reason "content_filter". Pass-through forwards events at
// once and judges them alongside, ending the stream as soon as the response
// is flagged. Either way the upstream request is cancelled at the cut and
// the decision is written to the audit log.
//
// # Trust
//
// The client's streamguard credentials (Authorization, X-Api-Key) and
// cookies never go upstream; its own upstream key may come in
// X-Upstream-Authorization. Requests and upstream events are parsed
// strictly (strictJSON): keys that repeat or differ from a known field
// only by case, several choices, or text after the finish are refused,
// so the guard reads what the model and the client read; tool-call pieces
// are accepted only in the order clients assemble them as the guard reads
// them. A choice may hold, beside its judged text and tool calls, only
// fields that carry none of the answer's text (strictJSON's closed
// shapes): an audio transcript, logprobs entries or a field the proxy does
// not know that holds text refuse the response, and a request that asks
// for logprobs or audio is refused. Input that does not fit
// the guard's stream is never forwarded unjudged: a prompt gets a 400
// context_length_exceeded, a response is cut with finish_reason "length";
// fail-open covers the guard's overload and failures only. What hold-back
// holds of a stream is bounded as a whole response is (upstream_too_large).
//
// # Byte offsets
//
// Judged tokens are mapped back to the upstream's bytes through their
// decoded text: it equals the fed text wherever that text is already in
// NFC, and an aligner re-synchronises the two after a stretch that NFC
// changes (see aligner). Text is released only at offsets whose every byte
// is covered by judged tokens.
package proxy
