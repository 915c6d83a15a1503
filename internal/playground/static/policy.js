// The guard's policy (guard/policy.go) in JavaScript, so that the page can
// re-apply another mode, debounce, thresholds or block list to verdicts it
// already has. It must give exactly what guard.Policy gives: the same
// classify, the same online flag (the first run of Debounce consecutive
// non-safe tokens) and the same final decision. Probabilities are float32
// in Go: sums and comparisons go through Math.fround to match.
"use strict";
(function (root) {
  const SAFE = 0, UNSAFE = 1, CONTROVERSIAL = 2;

  // normalize fills a policy's defaults: {mode, debounce, thresholds, block}.
  function normalize(p) {
    p = p || {};
    return {
      mode: p.mode === "loose" ? "loose" : "strict",
      debounce: p.debounce > 0 ? Math.floor(p.debounce) : 2,
      thresholds: Object.assign({}, p.thresholds || {}),
      block: (p.block || []).slice(),
    };
  }

  // classify is Policy.classify: v is a verdict as the API returns it,
  // unsafe and controversial the indexes of those labels in its risk
  // levels (-1 when absent).
  function classify(p, v, unsafe, controversial) {
    if (p.block.length > 0 && !p.block.includes(v.category)) return SAFE;
    if (Object.prototype.hasOwnProperty.call(p.thresholds, v.category)) {
      const t = Math.fround(p.thresholds[v.category]);
      let score = 0;
      if (unsafe >= 0) score = Math.fround(score + Math.fround(v.risk_probs[unsafe]));
      if (p.mode === "strict" && controversial >= 0) score = Math.fround(score + Math.fround(v.risk_probs[controversial]));
      return score >= t ? UNSAFE : SAFE;
    }
    if (v.risk_index === 0) return SAFE;
    if (v.risk_index === controversial) return CONTROVERSIAL;
    return UNSAFE;
  }

  function nonSafe(p, l) {
    return l === UNSAFE || (l === CONTROVERSIAL && p.mode === "strict");
  }

  // levels lists the policy's reading of every verdict.
  function levels(p, verdicts, unsafe, controversial) {
    return verdicts.map((v) => classify(p, v, unsafe, controversial));
  }

  // response runs responseState over a response's token verdicts and
  // returns {levels, nonSafe, flaggedAt, decision} as the guard has them:
  // flaggedAt is the online flag (-1: none), decision the official final
  // rule (Decision in Go, with the API's field names).
  function response(p, verdicts, unsafe, controversial) {
    p = normalize(p);
    const N = p.debounce;
    const st = { n: 0, run: 0, flaggedAt: -1, flaggedCat: "", runU: 0, runC: 0, unsafeAt: -1, contAt: -1, unsafeCat: "", contCat: "" };
    const lv = [], ns = [];
    for (const v of verdicts) {
      const l = classify(p, v, unsafe, controversial);
      lv.push(l);
      const i = st.n++;
      const bad = nonSafe(p, l);
      ns.push(bad);
      st.run = bad ? st.run + 1 : 0;
      if (st.run >= N && st.flaggedAt < 0) { st.flaggedAt = i; st.flaggedCat = v.category; }
      if (l === UNSAFE) { st.runU++; st.runC = 0; }
      else if (l === CONTROVERSIAL) { st.runU = 0; st.runC++; }
      else { st.runU = 0; st.runC = 0; }
      if (st.runU >= N && st.unsafeAt < 0) { st.unsafeAt = i; st.unsafeCat = v.category; }
      if (st.runC >= N && st.contAt < 0) { st.contAt = i; st.contCat = v.category; }
    }
    let d = { flagged: false, risk: "Safe", index: -1, tokens: st.n };
    if (st.unsafeAt >= 0) {
      d = { flagged: true, risk: "Unsafe", level: "Unsafe", index: st.unsafeAt, category: st.unsafeCat, tokens: st.n };
    } else if (st.contAt >= 0 && p.mode === "strict") {
      d = { flagged: true, risk: "Unsafe", level: "Controversial", index: st.contAt, category: st.contCat, tokens: st.n };
    } else if (st.flaggedAt >= 0 && p.mode === "strict") {
      d = { flagged: true, risk: "Unsafe", level: "Mixed", index: st.flaggedAt, category: st.flaggedCat, tokens: st.n };
    } else if (st.contAt >= 0) {
      d.level = "Controversial"; d.index = st.contAt; d.category = st.contCat;
    }
    return { levels: lv, nonSafe: ns, flaggedAt: st.flaggedAt, decision: d };
  }

  // prompt is the prompt verdict's flag under the policy.
  function prompt(p, v, unsafe, controversial) {
    p = normalize(p);
    return nonSafe(p, classify(p, v, unsafe, controversial));
  }

  const api = { SAFE, UNSAFE, CONTROVERSIAL, normalize, classify, levels, response, prompt };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.SGPolicy = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
