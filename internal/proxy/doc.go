// Package proxy is an OpenAI-compatible chat-completions proxy that puts
// the guard between an application and any LLM: it judges the prompt
// before forwarding it, and judges the upstream's answer token by token as
// it streams, stopping it mid-stream when the guard flags it.
//
// # Flow
//
// A request's last user turn (in the context of the conversation before
// it) is judged first; a flagged prompt is answered without calling the
// upstream, with an OpenAI-style error or a refusal completion (per
// tenant). Otherwise the request body is forwarded unchanged. The
// upstream's text deltas (content, reasoning_content or reasoning, and
// <think> blocks inside content) are rendered as the Qwen3 chat template
// renders an assistant turn and re-tokenized incrementally by the guard.
//
// # Modes
//
// Hold-back releases an upstream event, byte for byte, only once every
// token of its text and a look-ahead of K more tokens were judged, so no
// token of the run that flags a response ever reaches the client; when the
// response is flagged, the text before that run is sent and the stream
// ends with finish_reason "content_filter". Pass-through forwards events at
// once and judges them alongside, ending the stream as soon as the response
// is flagged. Either way the upstream request is cancelled at the cut and
// the decision is written to the audit log.
//
// # Byte offsets
//
// Judged tokens are mapped back to the upstream's bytes through their
// decoded text: it equals the fed text wherever that text is already in
// NFC, and an aligner re-synchronises the two after a stretch that NFC
// changes (see aligner). Text is released only at offsets whose every byte
// is covered by judged tokens.
package proxy
