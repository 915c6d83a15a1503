// Package train fits new guard heads on a frozen Qwen3Guard-Stream
// backbone: custom categories, or a custom risk boundary, from labelled
// conversations.
//
// The backbone is only ever run forward, once per conversation: the final
// normed hidden states at the labelled positions (the <|im_end|> closing
// the last user turn for the query heads, the judged response tokens for
// the response heads) are the training features, cached on disk by a key
// of the backbone's bytes and the tokenized data. Training then touches the
// four head tensors of each chosen path only (the `pre` projection, its
// RMSNorm weight, the risk head and the category head), with the same
// forward the engine runs, so that the verdicts of the written model equal
// the trainer's own evaluation.
//
// The written model folder reuses the backbone files (hard links where the
// file system allows) and holds the new heads in guard-heads.safetensors,
// with config.json's label maps, num_* fields and guard_inner_size updated.
package train
