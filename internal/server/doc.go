// Package server is `streamguard serve`: streaming moderation over HTTP for
// many tenants, with continuous batching.
//
// Every moderated conversation is a guard.Stream. Handlers queue work on
// their stream (a prompt, response text or ids) and hand it to the
// [Scheduler], whose single goroutine runs guard.Model.Step over all
// streams with queued work: one forward per step for every active stream,
// prompt prefills cut into chunks so that they do not hold back the
// response tokens of other streams. A stream has at most one operation in
// flight, so its tokens are judged in the order they arrived, and since
// Step is batch-invariant a stream's verdicts do not depend on what else
// ran with it.
//
// Admission is bounded by a KV-cache budget (positions times the model's
// bytes per position, with the cache's growth slack): a request that would
// exceed it waits in arrival order (streams already open first) for
// memory that other streams release, and gets 429 with Retry-After when
// the wait ends, instead of growing memory. Tenants
// come from a JSON file (API keys stored as SHA-256 hashes), each with its
// own policy, rate limit and stream limit; a tenant can reach only its own
// streams, whose ids are random 128-bit values.
package server
