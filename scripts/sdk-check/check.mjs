// Drives a running `streamguard serve --upstream` with the official OpenAI
// SDK for Node: models, moderations, plain and streamed chat and responses
// through the proxy, and every error path, checked by the SDK's own error
// classes.
// Environment: SG_URL (http://HOST:PORT), SG_MODEL (the served model name),
// SG_KEY_OK (a tenant that flags nothing), SG_KEY_FLAG (a tenant that flags
// everything).
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = process.env.SG_URL + "/v1";
const ok = new OpenAI({ apiKey: process.env.SG_KEY_OK, baseURL: base, maxRetries: 0 });
const flag = new OpenAI({ apiKey: process.env.SG_KEY_FLAG, baseURL: base, maxRetries: 0 });
const bad = new OpenAI({ apiKey: "sk-wrong", baseURL: base, maxRetries: 0 });
const ANSWER = "Hello from the fake upstream.";
const longText = "word ".repeat(3000);

let passed = 0;
const failures = [];
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e?.stack || e}`);
  }
}

// expectError checks that fn throws the SDK's error class cls with the
// given status and code.
async function expectError(fn, cls, status, code) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, "no error was thrown");
  assert.ok(err instanceof cls, `got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, status);
  assert.equal(err.code, code);
  return err;
}

await check("models.list", async () => {
  const page = await ok.models.list();
  assert.equal(page.data.length, 1);
  assert.equal(page.data[0].id, process.env.SG_MODEL);
  assert.equal(page.data[0].object, "model");
  assert.equal(page.data[0].owned_by, "streamguard");
  assert.ok(page.data[0].created > 1.6e9);
  const m = await ok.models.retrieve(process.env.SG_MODEL);
  assert.equal(m.id, process.env.SG_MODEL);
});

await check("moderations.create: not flagged, OpenAI category names", async () => {
  const r = await ok.moderations.create({ model: "x", input: "How do I bake bread?" });
  assert.equal(r.model, process.env.SG_MODEL);
  const res = r.results[0];
  assert.equal(res.flagged, false);
  for (const k of ["violence", "sexual", "self-harm", "illicit", "harassment", "hate", "sexual/minors"]) {
    assert.equal(typeof res.categories[k], "boolean", k);
    assert.equal(typeof res.category_scores[k], "number", k);
  }
  assert.equal(res.category_scores.violence, res.qwen3guard.category_scores.Violent);
  assert.equal(res.category_scores["self-harm"], res.qwen3guard.category_scores["Suicide & Self-Harm"]);
  assert.equal(res.category_scores.harassment, 0);
  assert.deepEqual(res.category_applied_input_types.violence, ["text"]);
});

await check("moderations.create: flagged (tenant thresholds 0)", async () => {
  const r = await flag.moderations.create({ input: ["first", "second"] });
  assert.equal(r.results.length, 2);
  for (const res of r.results) {
    assert.equal(res.flagged, true);
    assert.equal(res.qwen3guard.prompt.flagged, true);
    const cat = res.qwen3guard.prompt.category;
    assert.equal(res.qwen3guard.categories[cat], true);
    assert.ok(Object.values(res.categories).includes(true));
  }
});

await check("moderations.create: image part skipped with a note", async () => {
  const r = await ok.moderations.create({ model: "omni-moderation-latest", input: [
    { type: "text", text: "a caption" }, { type: "image_url", image_url: { url: "https://example.com/cat.png" } }] });
  assert.deepEqual(r.results[0].qwen3guard.skipped, ["image_url"]);
  assert.ok(r.results[0].qwen3guard.prompt);
});

await check("chat.completions.create (plain) through the proxy", async () => {
  const c = await ok.chat.completions.create({ model: "fake-llm", messages: [{ role: "user", content: "Say hello." }] });
  assert.equal(c.choices[0].message.content, ANSWER);
  assert.equal(c.choices[0].finish_reason, "stop");
  assert.equal(c.usage.total_tokens, 11);
});

await check("chat.completions.create (stream, include_usage) through the proxy", async () => {
  const stream = await ok.chat.completions.create({ model: "fake-llm", stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "Say hello." }] });
  let text = "", finish = null, usage = null, last = null;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      text += ch.delta?.content ?? "";
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
    last = chunk;
  }
  assert.equal(text, ANSWER);
  assert.equal(finish, "stop");
  assert.deepEqual(last.choices, []);
  assert.equal(usage.completion_tokens, 4);
});

await check("chat.completions.create: an agent's tools, tool call and tool result through the proxy", async () => {
  const tools = [{ type: "function", function: { name: "lookup", description: "Looks a record up.",
    parameters: { type: "object", properties: { id: { type: "string" } } } } }];
  const messages = [{ role: "user", content: "What is in record 7?" },
    { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "lookup", arguments: '{"id":"7"}' } }] },
    { role: "tool", tool_call_id: "c1", content: "a blue chair" }];
  for (let i = 0; i < 2; i++) { // the second time, the tools were judged before
    const c = await ok.chat.completions.create({ model: "fake-llm", tools, messages });
    assert.equal(c.choices[0].message.content, ANSWER);
  }
});

await check("responses.create (plain) through the proxy", async () => {
  const r = await ok.responses.create({ model: "fake-llm", instructions: "Be brief.", input: "Say hello." });
  assert.equal(r.output_text, ANSWER);
  assert.equal(r.status, "completed");
  assert.equal(r.usage.total_tokens, 11);
});

await check("responses.create (stream) through the proxy", async () => {
  const stream = await ok.responses.create({ model: "fake-llm", stream: true, input: [{ role: "user", content: "Say hello." }] });
  let text = "", last = null, seq = -1;
  for await (const ev of stream) {
    if (ev.type === "response.output_text.delta") text += ev.delta;
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
    last = ev;
  }
  assert.equal(text, ANSWER);
  assert.equal(last.type, "response.completed");
  assert.equal(last.response.output[0].content[0].text, ANSWER);
});

await check("responses.stream() helper: the final response through the proxy", async () => {
  const stream = ok.responses.stream({ model: "fake-llm", input: "Say hello." });
  let text = "";
  stream.on("response.output_text.delta", (ev) => (text += ev.delta));
  const final = await stream.finalResponse();
  assert.equal(text, ANSWER);
  assert.equal(final.output[0].content[0].text, ANSWER); // 4.x sets output_text on create() only
});

await check("responses.create: an agent's function tool, call and output through the proxy", async () => {
  const tools = [{ type: "function", name: "lookup", description: "Looks a record up.", strict: false,
    parameters: { type: "object", properties: { id: { type: "string" } } } }];
  const input = [{ role: "user", content: "What is in record 7?" },
    { type: "function_call", call_id: "c1", name: "lookup", arguments: '{"id":"7"}' },
    { type: "function_call_output", call_id: "c1", output: "a blue chair" }];
  const r = await ok.responses.create({ model: "fake-llm", tools, input, store: false });
  assert.equal(r.output_text, ANSWER);
});

await check("responses.create: continuing an answer the proxy relayed (previous_response_id)", async () => {
  const first = await ok.responses.create({ model: "fake-llm", input: "Say hello." });
  const next = await ok.responses.create({ model: "fake-llm", previous_response_id: first.id, input: "Again, please." });
  assert.equal(next.output_text, ANSWER);
  // Another tenant's answer is not its to continue.
  const e = await expectError(() => flag.responses.create({ model: "fake-llm", previous_response_id: first.id, input: "Again." }),
    OpenAI.BadRequestError, 400, "bad_request");
  assert.match(e.message, /previous_response_id/);
});

await check("responses.create: state the guard cannot see refused, BadRequestError 400", async () => {
  const e = await expectError(() => ok.responses.create({ model: "fake-llm", input: "Go on.", previous_response_id: "resp_1" }),
    OpenAI.BadRequestError, 400, "bad_request");
  assert.match(e.message, /previous_response_id/);
  await expectError(() => ok.responses.create({ model: "fake-llm", input: "Find it.", tools: [{ type: "web_search" }] }),
    OpenAI.BadRequestError, 400, "bad_request");
});

await check("bad key: AuthenticationError 401 invalid_api_key", async () => {
  await expectError(() => bad.moderations.create({ input: "hi" }), OpenAI.AuthenticationError, 401, "invalid_api_key");
  await expectError(() => bad.models.list(), OpenAI.AuthenticationError, 401, "invalid_api_key");
  await expectError(() => bad.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] }),
    OpenAI.AuthenticationError, 401, "invalid_api_key");
});

await check("unknown route: NotFoundError 404 not_found", async () => {
  await expectError(() => ok.embeddings.create({ model: "m", input: "hi" }), OpenAI.NotFoundError, 404, "not_found");
  await expectError(() => ok.models.retrieve("gpt-4o"), OpenAI.NotFoundError, 404, "model_not_found");
});

await check("wrong method: APIError 405 method_not_allowed", async () => {
  const err = await expectError(() => ok.get("/moderations"), OpenAI.APIError, 405, "method_not_allowed");
  assert.equal(err.headers["allow"], "POST");
});

await check("over-long prompt: BadRequestError 400 context_length_exceeded", async () => {
  const e1 = await expectError(() => ok.moderations.create({ input: longText }), OpenAI.BadRequestError, 400, "context_length_exceeded");
  assert.equal(e1.param, "input");
  const e2 = await expectError(() => ok.chat.completions.create({ model: "fake-llm", messages: [{ role: "user", content: longText }] }),
    OpenAI.BadRequestError, 400, "context_length_exceeded");
  assert.equal(e2.param, "messages");
  const e3 = await expectError(() => ok.responses.create({ model: "fake-llm", input: longText }),
    OpenAI.BadRequestError, 400, "context_length_exceeded");
  assert.equal(e3.param, "input");
});

await check("flagged prompt: BadRequestError 400 content_filter", async () => {
  const e = await expectError(() => flag.chat.completions.create({ model: "fake-llm", messages: [{ role: "user", content: "Say hello." }] }),
    OpenAI.BadRequestError, 400, "content_filter");
  assert.equal(e.param, "messages");
  await expectError(() => flag.chat.completions.create({ model: "fake-llm", stream: true, messages: [{ role: "user", content: "Say hello." }] }),
    OpenAI.BadRequestError, 400, "content_filter");
  const e2 = await expectError(() => flag.responses.create({ model: "fake-llm", input: "Say hello." }),
    OpenAI.BadRequestError, 400, "content_filter");
  assert.equal(e2.param, "input");
  await expectError(() => flag.responses.create({ model: "fake-llm", stream: true, input: "Say hello." }),
    OpenAI.BadRequestError, 400, "content_filter");
});

console.log(`sdk-check: ${passed} passed, ${failures.length} failed${failures.length ? ": " + failures.join("; ") : ""}`);
process.exit(failures.length ? 1 : 0);
