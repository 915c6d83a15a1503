// Package tokenizer is an exact, fast implementation of the Qwen3 tokenizer:
// a Hugging Face tokenizer.json with byte-level BPE, NFC normalisation, the
// Qwen2 split pattern and added tokens. It encodes, decodes, re-tokenises
// streamed text incrementally, and renders chats the way the Qwen3 chat
// template does.
//
// Output matches Hugging Face tokenizers id for id. A tokenizer.json that
// uses a component this package does not implement is refused when loaded
// rather than encoded differently.
//
// A Tokenizer is immutable after loading and safe for concurrent use.
// StreamEncoder and StreamDecoder hold per-stream state and are not.
package tokenizer
