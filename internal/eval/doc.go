// Package eval measures a guard model on a labelled set: precision,
// recall and F1 of the prompt and response verdicts in strict and loose
// modes, per category, a confusion matrix, the detection-position bins of
// the Qwen3Guard report for streamed responses, and throughput.
//
// # Data
//
// A data set is JSON lines, one item each (blank lines and lines starting
// with '#' are skipped). An item is a conversation that ends with a user
// turn, optionally followed by one assistant turn:
//
//	{"id": "p1", "prompt": "…", "prompt_label": "Unsafe", "prompt_category": "Violent"}
//	{"id": "r1", "prompt": "…", "response": "…", "response_label": "Unsafe",
//	 "response_category": "Violent", "unsafe_text": "the harmful sentence"}
//	{"message": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}],
//	 "label": "Unsafe", "unsafe_start_index": 57, "unsafe_end_index": 80}
//
// Fields:
//   - id: any JSON value, echoed in per-item results.
//   - prompt, response, system: a one-turn conversation; or messages (also
//     spelled message, as in the Qwen3GuardTest sets): a list of
//     {"role": "system"|"user"|"assistant", "content": "…"}.
//   - prompt_label, response_label: "Safe", "Unsafe" or "Controversial",
//     for the last user turn and for the final assistant turn.
//   - label: the Qwen3GuardTest field; it is the response label when the
//     conversation ends with an assistant turn, else the prompt label.
//   - prompt_category, response_category (category goes with label): the
//     gold category of a non-safe item, a name from the model's label map.
//   - unsafe_start_index, unsafe_end_index: where the unsafe content of the
//     response lies, as token positions (inclusive) in the whole rendered
//     conversation, as in the Qwen3GuardTest streaming splits; or
//     unsafe_text: an exact passage of the response, turned into that
//     token span by the model's tokenizer.
//
// In strict mode a Controversial label or verdict counts as unsafe, in
// loose mode as safe, for gold labels and predictions alike.
package eval
