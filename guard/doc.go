// Package guard is streaming safety moderation with Qwen3Guard-Stream
// models: load a model (a folder, or a hub id from the local cache), open a
// [Stream] per conversation, judge the user's prompt, then judge the
// assistant's response token by token as it is generated. Each stream keeps
// a KV cache, so a streamed token costs one token's forward instead of
// re-running the whole prefix as the reference Python code does; that
// forward's attention still reads the prefix, so its cost grows slowly with
// the conversation.
//
// # Flow
//
//	m, err := guard.Load(ctx, "Qwen/Qwen3Guard-Stream-0.6B", guard.Options{})
//	if err != nil {
//		return err // wraps fs.ErrNotExist when the folder or cached id is missing
//	}
//	defer m.Close()
//	s := m.NewStream()
//	defer s.Close()
//	pv, err := s.JudgePrompt(ctx, []guard.Message{{Role: "user", Content: prompt}})
//	if err != nil {
//		return err
//	}
//	if pv.Flagged {
//		return errRefused // do not send the prompt to the LLM
//	}
//	for chunk := range llmDeltas {
//		if _, err := s.AppendText(ctx, chunk); err != nil { // verdicts for the tokens now final
//			return err
//		}
//		if _, flagged := s.Flagged(); flagged {
//			break // stop the generation
//		}
//	}
//	if _, err := s.FlushText(ctx); err != nil {
//		return err
//	}
//	d := s.Decision()
//
// The prompt verdict comes from the query heads at the <|im_end|> that
// closes the last user turn. Response tokens are read from the response
// heads. Between the two, the stream feeds the assistant header and an empty
// think block ("\n<|im_start|>assistant\n<think>\n\n</think>\n\n"); those
// tokens shape the context but are not judged, and no call returns a
// verdict for them. A multi-turn conversation
// continues the same stream: [Stream.EndResponse] closes the assistant turn
// and the next [Stream.JudgePrompt] judges the next user turn.
//
// Agents: an assistant [Message] may hold [ToolCall]s, and a message of role
// "tool" a call's result; they are laid out as the Qwen3 template writes
// them, the tags <tool_call>, </tool_call>, <tool_response> and
// </tool_response> as the model's tokens for them (a tag written in
// message text stays text). A prompt may end with tool results, the user
// turn the template makes of them (a tool that returned nothing
// included): its verdict is then the results'. In a streamed answer,
// [Stream.StartToolCall]
// and [Stream.EndToolCall] feed a call's tags; what the template writes
// around and inside them is appended as text (a "\n" before a call that
// follows text or another call, then "\n{\"name\": \"NAME\",
// \"arguments\": ARGUMENTS}\n").
//
// AppendText holds back the end of the text until later text decides its
// tokens (the last word; one long word whole), and FlushText or
// EndResponse judges it. Held text counts toward the context: AppendText
// refuses text whose held part would not fit if the text ended there
// ([ErrContextLength], the stream unchanged), so that FlushText finds room
// for what was accepted (EndResponse needs room for the closing
// <|im_end|> too). Near the bound the held text is counted as flushing it
// would; a word that grew since its last count is bounded from it (three
// ids a byte of what was written since, with a margin for the word's end
// re-split) and counted again only when that bound no longer fits, so that
// a long word streamed in small chunks is not counted at every chunk; at
// the bound, a word over a kilobyte gives up its last few ids of room (up
// to 32) rather than be counted at every append, and the same chunk sent
// again after a refusal is refused on that count. Within a few hundred ids
// of the bound, appends to a long word (tens of kilobytes in one run of
// letters) still cost a count of the word every few appends.
// [Stream.HeldBytes] says how much a stream holds. The context is the model's max_position_embeddings, or
// less where [Stream.SetMaxTokens] caps what one conversation may cost.
//
// # Policy
//
// A response is flagged at the first token that completes a run of
// [Policy.Debounce] (default 2) consecutive non-safe tokens, as the
// official evaluation does. In [Strict] mode a Controversial token counts as
// non-safe; in [Loose] mode it counts as safe. [Policy.Thresholds] replaces
// the argmax rule for a category with a probability threshold.
// [Stream.Decision] applies the official final rule (an Unsafe run first,
// then a Controversial run) to all tokens judged so far.
//
// # Batching
//
// Every call on a Stream runs a forward for that stream alone. A server
// that holds many streams queues work on each (QueuePrompt, QueueText, ...)
// and calls [Model.Step] to run one forward over the pending tokens of all
// of them. Results are bitwise identical either way.
//
// # Cancellation
//
// Every call that runs the model takes a [context.Context] and checks it
// before each forward; a forward that has started runs to its end. The
// synchronous calls (JudgePrompt, AppendText, ...) feed a long input in
// chunks of at most 256 tokens, one forward each, so a cancellation takes
// effect between chunks. A cancelled call returns an error wrapping
// ctx.Err() and leaves the stream usable: the tokens already fed stay fed,
// the rest stay queued ([Stream.Pending]) and the next call feeds them
// first. The verdicts of the tokens fed before the cancellation are
// returned with the error (a prompt verdict, once its <|im_end|> is fed, is
// [Stream.LastPrompt]). Its input was taken, also when the context was
// done before the call began on a stream no other call held: do not send
// the same text to AppendText again. A cancelled EndResponse may be called again to have its tail fed.
// A cancelled JudgePrompt is finished by calling it again with the same
// messages; a prompt with other messages is refused until then. The one
// call that takes nothing is one whose context ends while it waits for
// another call on the same stream (see Concurrency): its error wraps
// [ErrNotTaken] beside ctx.Err(), and its input is to be sent again.
// [Model.Moderate] closes its own stream.
//
// # Concurrency
//
// A Model is safe for concurrent use. A Stream's methods lock the stream, so
// one goroutine may queue text while another runs Model.Step; a stream
// belongs to at most one Step at a time. The synchronous calls on one
// stream (JudgePrompt, AppendText, FlushText, ...) take turns: each queues
// its input and returns its own verdicts, while another waits (or its
// context ends). A stream closed by another goroutine ends such a call
// with [ErrClosed]; Model.Step leaves a closed stream out, with an empty
// result. [Model.Close] may run while other
// goroutines use the model (a server reloading it): it waits for the
// forwards under way, and every call that would run the model afterwards
// fails with [ErrModelClosed].
package guard
