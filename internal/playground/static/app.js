// The streamguard playground. Every string from the conversation or the
// API is put in the page with textContent (never parsed as HTML), and the page
// talks only to the server that served it.
"use strict";
(function () {
  const P = globalThis.SGPolicy;
  const $ = (id) => document.getElementById(id);
  const LEVEL_NAMES = ["Safe", "Unsafe", "Controversial"];

  const state = {
    key: "",
    info: null, // GET /v1/info
    infoKey: null, // the key info was read with
    tenantPolicy: null,
    run: null, // the last conversation judged
    focus: 0, // the token that has the roving tabindex
  };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  // api calls the server with the tenant key when there is one.
  async function api(method, path, body) {
    const headers = {};
    if (state.key) headers["Authorization"] = "Bearer " + state.key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((data && data.error && data.error.message) || res.status + " " + res.statusText);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function pct(x) { return (100 * x).toFixed(1) + "%"; }

  // ---- setup ----

  // loadInfo reads the tenant's model and policy for the key in use; the
  // page keeps which key that was, so that judging with another key
  // reads the other tenant's first (its policy is the one the server applies).
  async function loadInfo() {
    state.info = null;
    const key = state.key;
    try {
      state.info = await api("GET", "/v1/info");
      state.infoKey = key;
    } catch (e) {
      if (e.status === 401) {
        $("keyrow").hidden = false;
        $("model").textContent = "This server needs a tenant key: enter it and press Judge.";
        $("key").focus();
        return false;
      }
      $("model").textContent = "Could not reach the server: " + e.message;
      return false;
    }
    const i = state.info;
    $("model").textContent = "Model " + i.model + " · tenant " + i.tenant + " · tenant policy: " + i.policy.mode + ", debounce " + i.policy.debounce;
    state.tenantPolicy = P.normalize(i.policy);
    buildCategories();
    setPolicy(state.tenantPolicy);
    return true;
  }

  function buildCategories() {
    const body = $("cats").tBodies[0];
    body.replaceChildren();
    const cats = [...state.info.response_categories];
    for (const c of state.info.query_categories) if (!cats.includes(c)) cats.push(c);
    cats.forEach((c, i) => {
      const tr = el("tr");
      tr.append(el("th", { scope: "row", id: "cat-" + i }, c));
      const td = el("td");
      const t = el("input", { type: "number", min: "0", max: "1", step: "0.01", inputmode: "decimal", "aria-labelledby": "cat-" + i, "data-threshold": c, placeholder: "argmax" });
      t.setAttribute("aria-label", "threshold for " + c);
      td.append(t);
      const tdb = el("td");
      const b = el("input", { type: "checkbox", "data-block": c });
      b.setAttribute("aria-label", "block " + c);
      tdb.append(b);
      tr.append(td, tdb);
      body.append(tr);
    });
  }

  // ---- policy controls ----

  function setPolicy(p) {
    for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === p.mode;
    $("debounce").value = p.debounce;
    for (const t of document.querySelectorAll("input[data-threshold]")) {
      const c = t.getAttribute("data-threshold");
      t.value = Object.prototype.hasOwnProperty.call(p.thresholds, c) ? p.thresholds[c] : "";
    }
    for (const b of document.querySelectorAll("input[data-block]")) b.checked = p.block.includes(b.getAttribute("data-block"));
  }

  function readPolicy() {
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const debounce = Math.max(1, parseInt($("debounce").value, 10) || 1);
    const thresholds = {};
    for (const t of document.querySelectorAll("input[data-threshold]")) {
      const v = t.value.trim();
      if (v === "") continue;
      const f = Number(v);
      if (f >= 0 && f <= 1) thresholds[t.getAttribute("data-threshold")] = f;
    }
    const block = [];
    for (const b of document.querySelectorAll("input[data-block]")) if (b.checked) block.push(b.getAttribute("data-block"));
    return P.normalize({ mode, debounce, thresholds, block });
  }

  function idx(list, name) { return list ? list.indexOf(name) : -1; }

  // ---- rendering ----

  function renderPrompt(v, policy) {
    const box = $("promptv");
    box.replaceChildren();
    if (!v) { box.append(el("p", { class: "hint" }, "—")); return; }
    const qr = state.info.query_risk_levels;
    const flagged = P.prompt(policy, v, idx(qr, "Unsafe"), idx(qr, "Controversial"));
    box.setAttribute("data-level", v.risk);
    box.setAttribute("data-flagged", String(flagged));
    const head = el("p");
    head.append(el("span", { class: "tok", "data-level": LEVEL_NAMES.includes(v.risk) ? v.risk : "Unsafe" }, v.risk),
      document.createTextNode(v.risk_index === 0 ? "" : " · " + v.category + " (" + pct(v.category_prob) + ")"),
      document.createTextNode(flagged ? " · flagged under this policy" : " · not flagged under this policy"));
    box.append(head);
    const bars = el("div", { class: "bars" });
    qr.forEach((name, i) => {
      const row = el("div", { class: "bar" });
      const meter = el("meter", { min: "0", max: "1", value: String(v.risk_probs[i]) });
      meter.setAttribute("aria-label", name);
      row.append(el("span", {}, name), meter, el("span", { class: "num" }, pct(v.risk_probs[i])));
      bars.append(row);
    });
    box.append(bars);
  }

  function tokenTitle(t, counts) {
    const r = state.info.risk_levels;
    const probs = r.map((name, i) => name + " " + pct(t.risk_probs[i])).join(", ");
    return "#" + t.index + " " + JSON.stringify(t.text) + ": " + t.risk + " (" + probs + "); category " + t.category +
      " (" + pct(t.category_prob) + ")" + (counts ? "; counts as non-safe under this policy" : "");
  }

  function addToken(t) {
    const s = el("span", { class: "tok", "data-index": String(t.index), "data-level": t.risk, tabindex: "-1" }, t.text);
    s.addEventListener("focus", () => { state.focus = t.index; showDetail(t.index); });
    s.addEventListener("mouseenter", () => showDetail(t.index));
    $("tokens").append(s);
    if (t.index === 0) s.tabIndex = 0;
  }

  function showDetail(i) {
    const run = state.run;
    if (!run || !run.tokens[i]) return;
    const t = run.tokens[i];
    const d = $("detail");
    d.replaceChildren();
    const r = run.applied;
    d.append(el("strong", {}, "Token #" + i + " "), el("code", {}, JSON.stringify(t.text)));
    const ul = el("ul");
    ul.append(el("li", {}, "level " + t.risk + (r && r.nonSafe[i] ? " — counts as non-safe under this policy" : "")));
    state.info.risk_levels.forEach((name, k) => ul.append(el("li", {}, "P(" + name + ") = " + t.risk_probs[k].toFixed(4))));
    ul.append(el("li", {}, "category " + t.category + " (P = " + t.category_prob.toFixed(4) + ")"));
    if (r && r.flaggedAt === i) ul.append(el("li", {}, "the stream is flagged at this token"));
    d.append(ul);
  }

  // apply re-reads the verdicts under the policy in the controls and
  // updates the marks and the decision; the model is not run again.
  function apply() {
    const run = state.run;
    if (!run || !state.info) return;
    const policy = readPolicy();
    run.policy = policy;
    renderPrompt(run.prompt, policy);
    const rl = state.info.risk_levels;
    const a = P.response(policy, run.tokens, idx(rl, "Unsafe"), idx(rl, "Controversial"));
    run.applied = a;
    run.promptFlagged = run.prompt ? P.prompt(policy, run.prompt, idx(state.info.query_risk_levels, "Unsafe"), idx(state.info.query_risk_levels, "Controversial")) : false;
    const spans = $("tokens").children;
    for (let i = 0; i < spans.length; i++) {
      const s = spans[i];
      s.classList.toggle("ns", !!a.nonSafe[i]);
      s.classList.toggle("flag", a.flaggedAt === i);
      s.classList.toggle("decision-at", a.decision.index === i && a.decision.flagged);
      if (a.flaggedAt === i) s.setAttribute("data-flagged", "true"); else s.removeAttribute("data-flagged");
      s.title = tokenTitle(run.tokens[i], a.nonSafe[i]);
    }
    renderDecision();
  }

  function renderDecision() {
    const run = state.run;
    const box = $("decision");
    box.replaceChildren();
    const a = run.applied;
    const d = a.decision;
    const blocked = run.promptFlagged || a.flaggedAt >= 0;
    box.setAttribute("data-state", blocked ? "flagged" : "allowed");
    box.setAttribute("data-flagged-index", String(a.flaggedAt));
    box.setAttribute("data-decision", JSON.stringify(d));
    box.setAttribute("data-prompt-flagged", String(run.promptFlagged));
    const mode = run.policy.mode + ", debounce " + run.policy.debounce;
    const head = el("p", { class: "big" }, blocked ? "Flagged" : "Allowed");
    box.append(head);
    const ul = el("ul");
    ul.append(el("li", {}, "Prompt: " + (run.prompt ? run.prompt.risk + (run.promptFlagged ? " — flagged" : " — not flagged") : "—")));
    ul.append(el("li", {}, a.flaggedAt >= 0
      ? "Response: flagged at token #" + a.flaggedAt + " " + JSON.stringify(run.tokens[a.flaggedAt].text) + " (" + run.tokens[a.flaggedAt].category + ")"
      : "Response: not flagged (" + run.tokens.length + " tokens)"));
    ul.append(el("li", {}, "Final decision: " + d.risk + (d.level ? " (" + d.level + " run ending at #" + d.index + (d.category ? ", " + d.category : "") + ")" : "")));
    ul.append(el("li", { class: "hint" }, "Policy: " + mode + (Object.keys(run.policy.thresholds).length ? ", thresholds " + JSON.stringify(run.policy.thresholds) : "") + (run.policy.block.length ? ", block " + run.policy.block.join(", ") : "")));
    if (run.serverState) {
      ul.append(el("li", { class: "hint" }, "Server (tenant policy): " + run.serverState.status + (run.serverState.flagged_index >= 0 ? " at #" + run.serverState.flagged_index : "") + ", decision " + run.serverState.decision.risk));
    }
    box.append(ul);
    $("tokcount").textContent = "(" + run.tokens.length + " tokens)";
  }

  // ---- judging ----

  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  // judge runs one judgement at a time: a second click (or Enter) while
  // one runs, the tenant's info being read included, does nothing, so
  // that two runs never write into one list of tokens.
  async function judge(ev) {
    ev.preventDefault();
    if ($("judge").disabled) return;
    $("judge").disabled = true;
    try {
      await judgeOnce();
    } finally {
      $("judge").disabled = false;
    }
  }

  async function judgeOnce() {
    showError("");
    if ($("keyrow").hidden === false) state.key = $("key").value.trim();
    if ((!state.info || state.infoKey !== state.key) && !(await loadInfo())) return;
    const system = $("system").value, prompt = $("prompt").value, response = $("response").value;
    if (!prompt.trim()) { showError("The prompt is empty."); $("prompt").focus(); return; }
    const chunk = Math.max(1, parseInt($("chunk").value, 10) || 12);
    const delay = Math.max(0, parseInt($("delay").value, 10) || 0);
    $("download").disabled = true;
    $("tokens").replaceChildren();
    $("detail").replaceChildren();
    $("timing").textContent = "";
    const run = { system, prompt: null, promptText: prompt, response, tokens: [], serverState: null, policy: readPolicy(), applied: null, promptFlagged: false, chunks: 0 };
    state.run = run;
    let id = null;
    const t0 = performance.now();
    let firstToken = -1;
    try {
      const body = { prompt };
      if (system.trim()) body.system = system;
      const open = await api("POST", "/v1/streams", body);
      id = open.id;
      const tPrompt = performance.now() - t0;
      run.prompt = open.prompt;
      run.serverState = open.state;
      apply();
      // Split by code points (never inside a surrogate pair).
      const cps = Array.from(response);
      for (let i = 0; i < cps.length; i += chunk) {
        const last = i + chunk >= cps.length;
        const r = await api("POST", "/v1/streams/" + encodeURIComponent(id) + "/append", { text: cps.slice(i, i + chunk).join(""), flush: last });
        run.chunks++;
        for (const t of r.tokens) { run.tokens.push(t); addToken(t); }
        if (r.tokens.length && firstToken < 0) firstToken = performance.now() - t0;
        run.serverState = r.state;
        apply();
        if (!last && delay) await sleep(delay);
      }
      if (cps.length === 0) apply();
      const total = performance.now() - t0;
      run.timing = { prompt_ms: tPrompt, first_token_ms: firstToken, total_ms: total };
      $("timing").textContent = "Prompt verdict after " + tPrompt.toFixed(0) + " ms" + (firstToken >= 0 ? ", first token verdict after " + firstToken.toFixed(0) + " ms" : "") +
        "; " + run.tokens.length + " tokens in " + run.chunks + " appends, " + total.toFixed(0) + " ms in all (with the " + delay + " ms pauses).";
      $("timing").setAttribute("data-first-verdict-ms", tPrompt.toFixed(1));
      $("download").disabled = false;
      document.body.setAttribute("data-judged", "true");
    } catch (e) {
      if (e.status === 401) { $("keyrow").hidden = false; state.info = null; }
      showError(e.message);
    } finally {
      if (id) api("DELETE", "/v1/streams/" + encodeURIComponent(id)).catch(() => {});
    }
  }

  function download() {
    const run = state.run;
    if (!run) return;
    const out = {
      model: state.info.model,
      conversation: { system: run.system, prompt: run.promptText, response: run.response },
      policy: run.policy,
      prompt: run.prompt,
      prompt_flagged: run.promptFlagged,
      tokens: run.tokens,
      flagged_index: run.applied.flaggedAt,
      decision: run.applied.decision,
      server_state: run.serverState,
      timing: run.timing,
    };
    const blob = new Blob([JSON.stringify(out, null, 2) + "\n"], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "streamguard-verdicts.json" });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // Roving focus over the tokens: one tab stop, arrows move.
  function tokenKeys(ev) {
    const spans = $("tokens").children;
    if (!spans.length) return;
    let i = state.focus;
    switch (ev.key) {
      case "ArrowRight": case "ArrowDown": i = Math.min(spans.length - 1, i + 1); break;
      case "ArrowLeft": case "ArrowUp": i = Math.max(0, i - 1); break;
      case "Home": i = 0; break;
      case "End": i = spans.length - 1; break;
      case "f": if (state.run && state.run.applied.flaggedAt >= 0) i = state.run.applied.flaggedAt; else return; break;
      default: return;
    }
    ev.preventDefault();
    for (const s of spans) s.tabIndex = -1;
    spans[i].tabIndex = 0;
    spans[i].focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("form").addEventListener("submit", judge);
    $("policy").addEventListener("input", apply);
    $("policy").addEventListener("change", apply);
    $("policy").addEventListener("submit", (e) => e.preventDefault());
    $("reset").addEventListener("click", () => { if (state.tenantPolicy) { setPolicy(state.tenantPolicy); apply(); } });
    $("download").addEventListener("click", download);
    $("tokens").addEventListener("keydown", tokenKeys);
    loadInfo();
  });
})();
