// A tiny OpenAI-compatible chat-completions upstream for the SDK check:
// it answers every request with the same short text, streamed (with a
// usage chunk when stream_options.include_usage asks) or whole. It prints
// "listening PORT" once it listens on 127.0.0.1 (port 0: a free one).
import http from "node:http";

export const ANSWER = ["Hello", " from", " the fake", " upstream."];
const meta = { id: "chatcmpl-fake1", object: "chat.completion.chunk", created: 1700000000, model: "fake-llm" };
const usage = { prompt_tokens: 7, completion_tokens: ANSWER.length, total_tokens: 7 + ANSWER.length };

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
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

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
