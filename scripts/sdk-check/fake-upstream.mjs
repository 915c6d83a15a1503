// A tiny OpenAI-compatible upstream for the SDK check: chat completions
// and the Responses API. It answers every request with the same short
// text, streamed (chat: with a usage chunk when
// stream_options.include_usage asks; responses: the events OpenAI sends,
// named and numbered) or whole. It prints "listening PORT" once it listens
// on 127.0.0.1 (port 0: a free one).
import http from "node:http";

export const ANSWER = ["Hello", " from", " the fake", " upstream."];
const meta = { id: "chatcmpl-fake1", object: "chat.completion.chunk", created: 1700000000, model: "fake-llm" };
const usage = { prompt_tokens: 7, completion_tokens: ANSWER.length, total_tokens: 7 + ANSWER.length };

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    if (req.method === "POST" && req.url.endsWith("/responses")) {
      responses(JSON.parse(body), res);
      return;
    }
    if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { message: "not found", type: "invalid_request_error", param: null, code: "not_found" } }));
      return;
    }
    const r = JSON.parse(body);
    if (!r.stream) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ ...meta, object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: ANSWER.join("") }, finish_reason: "stop" }], usage }));
      return;
    }
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    const send = (v) => res.write(`data: ${JSON.stringify(v)}\n\n`);
    send({ ...meta, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] });
    for (const t of ANSWER) send({ ...meta, choices: [{ index: 0, delta: { content: t }, finish_reason: null }] });
    send({ ...meta, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
    if (r.stream_options?.include_usage) send({ ...meta, choices: [], usage });
    res.end("data: [DONE]\n\n");
  });
});

// responses answers a Responses API request, each answer with an id of
// its own (as an upstream names the answers it stores).
let responseCount = 0;
function responses(r, res) {
  const id = `resp_fake${++responseCount}`;
  const part = { type: "output_text", text: ANSWER.join(""), annotations: [] };
  const item = { id: "msg_fake1", type: "message", status: "completed", role: "assistant", content: [part] };
  const resp = (status, output) => ({ id, object: "response", created_at: 1700000000, status, model: "fake-llm",
    output, usage: status === "completed" ? { input_tokens: 7, output_tokens: ANSWER.length, total_tokens: 7 + ANSWER.length } : null });
  if (!r.stream) {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(resp("completed", [item])));
    return;
  }
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  let seq = 0;
  const send = (type, v) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...v })}\n\n`);
  const at = { item_id: item.id, output_index: 0, content_index: 0 };
  send("response.created", { response: resp("in_progress", []) });
  send("response.in_progress", { response: resp("in_progress", []) });
  send("response.output_item.added", { output_index: 0, item: { ...item, status: "in_progress", content: [] } });
  send("response.content_part.added", { ...at, part: { ...part, text: "" } });
  for (const t of ANSWER) send("response.output_text.delta", { ...at, delta: t, logprobs: [], obfuscation: "pad" });
  send("response.output_text.done", { ...at, text: part.text, logprobs: [] });
  send("response.content_part.done", { ...at, part });
  send("response.output_item.done", { output_index: 0, item });
  send("response.completed", { response: resp("completed", [item]) });
  res.end();
}

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
