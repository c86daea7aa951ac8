/* Swarm's live view: a peer's card (its machine, model, slots, state and metrics). */
"use strict";
window.SwarmPeers = (function () {
  const { DASH, isObj, obj, arr, isNum, isIndex, str, num, secs, el, pair } = window.SwarmDom;

  function peerState(p) {
    if (p.disabled === true) return "disabled";
    if (p.live === true) return "live";
    return p.advertised === true ? "advertised" : "lost";
  }  function peerCard(p, s) {
    const prof = obj(p.profile), hw = obj(prof.hardware), m = obj(p.metrics);
    const card = el("div", "peer");
    card.dataset.peer = str(p.name);
    card.dataset.state = s;
    const head = el("div", "peer-head");
    head.append(el("span", "peer-name", str(p.name)), el("span", "badge " + s, s));
    card.append(head);
    if (isObj(p.profile)) {
      const what = [prof.backend, prof.model].filter((x) => typeof x === "string" && x);
      const conf = el("div", "peer-conf");
      conf.append(pair("n_ctx", str(prof.n_ctx)), pair("GPU layers", str(prof.gpu_layers)));
      card.append(el("div", "peer-model", what.length ? what.join(" ") : DASH), conf,
                  el("div", "peer-hw", hardware(hw)), slotsBar(p));
    } else {
      card.append(el("div", "peer-hw", "not connected: its model and machine are unknown"));
    }
    // of the candidates that ended on it: running and cancelled ones are no one's fault
    const ended = isNum(m.successes) && isNum(m.failures) ? m.successes + m.failures : 0;
    const ok = ended > 0
      ? `${m.successes}/${ended} (${Math.round(100 * m.successes / ended)}%)` : DASH;
    const metrics = el("div", "metrics");
    metrics.append(pair("ok", ok), pair("p95", secs(m.latency_p95_s)),
                   pair("TTFT", secs(m.ttft_mean_s)), pair("tok/s", num(m.tokens_per_s, 1)),
                   pair("wins", str(m.wins)));
    card.append(metrics);
    if (typeof m.last_error === "string" && m.last_error) {
      card.append(el("div", "peer-error", "last error: " + m.last_error));
    }
    return card;
  }
  function hardware(hw) {
    const parts = [[hw.platform, hw.arch].filter((x) => typeof x === "string" &&
                                                   x && x !== "unknown").join(" ")];
    if (isNum(hw.cores_logical)) parts.push(hw.cores_logical + " cores");
    if (isNum(hw.ram_total_mb)) parts.push((hw.ram_total_mb / 1024).toFixed(1) + " GB RAM");
    for (const g of arr(hw.gpus).filter(isObj)) {
      const vram = isNum(g.vram_total_mb) ? " " + (g.vram_total_mb / 1024).toFixed(0) + " GB" : "";
      parts.push((typeof g.name === "string" && g.name ? g.name : "GPU") + vram);
    }
    if (hw.apple_silicon === true && typeof hw.chip === "string") parts.push(hw.chip);
    const text = parts.filter(Boolean).join(" \u00b7 ");
    return text || DASH;
  }
  function slotsBar(p) {
    const total = isIndex(p.slots) ? p.slots : 0;
    const busy = isIndex(p.busy) ? Math.min(p.busy, total) : 0;
    const box = el("div", "slots");
    const bar = el("div", "bar");
    const used = el("div", "used");
    used.style.width = total ? (100 * busy / total).toFixed(0) + "%" : "0";
    bar.append(used);
    box.append(bar, el("span", "", total ? `${busy}/${total} slots busy` : "no slots"));
    return box;
  }

  return { peerState, peerCard };
})();
