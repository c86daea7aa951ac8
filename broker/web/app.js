/* Swarm's live view. One EventSource on /ui/events feeds a small state (the broker, its
   peers, the running and recent jobs); the page is drawn from that state at most once per
   animation frame. Every value off the stream is optional and may be odd: it shows as "—".
   Text goes in with textContent only: candidates are model output. */
"use strict";
(function () {
  const MAX_JOBS = 50;          // jobs kept on the page; the oldest ended ones go first
  const RECONNECT_MS = 1500;    // after the browser gave up on the stream

  const { DASH, $, isObj, obj, arr, isNum, isIndex, str, num, secs, clip, id, el, setText,
          setData, fill, pair } = window.SwarmDom;
  const { peerState, peerCard } = window.SwarmPeers;

  const state = { broker: {}, peers: [], jobs: new Map(), order: [], picked: null };
  const dirty = { header: true, peers: true, jobs: true, job: true };
  let view = { id: null, cards: new Map(), final: undefined };
  let frame = 0;

  /* ---- state from events ---- */

  function toCand(c) {
    c = obj(c);
    return { cand: c.cand, peer: c.peer, state: c.state, tokens: c.tokens, ttft_s: c.ttft_s,
             latency_s: c.latency_s, attempts: c.attempts, error: c.error,
             judge: c.judge === true, text: typeof c.text === "string" ? c.text : "" };
  }
  function toJob(j) {
    j = obj(j);
    const key = id(j.id);
    if (key === null) return null;
    const cands = new Map();
    for (const c of arr(j.cands)) if (isIndex(obj(c).cand)) cands.set(c.cand, toCand(c));
    return { id: key, question: typeof j.question === "string" ? j.question : "", model: j.model,
             strategy: j.strategy, n: j.n, state: j.state, created: j.created, took_s: j.took_s,
             final: isObj(j.final) ? j.final : null, cands };
  }


  function snapshot(ev) {
    state.broker = obj(ev.broker);
    state.peers = arr(ev.peers).filter(isObj);
    state.jobs = new Map();
    const jobs = arr(ev.jobs).map(toJob).filter(Boolean);
    const created = (j) => (isNum(j.created) ? j.created : -Infinity);
    jobs.sort((a, b) => created(b) - created(a));   // stable: the broker's order breaks ties
    for (const j of jobs) state.jobs.set(j.id, j);
    state.order = [...state.jobs.keys()];
    if (state.picked !== null && !state.jobs.has(state.picked)) state.picked = null;
    view.id = null;                                   // rebuild: nothing stale survives
    for (const k in dirty) dirty[k] = true;
  }
  function addJob(job) {
    if (!state.jobs.has(job.id)) state.order.unshift(job.id);
    state.jobs.set(job.id, job);
    while (state.order.length > MAX_JOBS) {
      const old = [...state.order].reverse().find((k) => k !== state.picked &&
                                                   state.jobs.get(k).state !== "running");
      if (old === undefined) break;
      state.order.splice(state.order.indexOf(old), 1);
      state.jobs.delete(old);
    }
    dirty.header = dirty.jobs = dirty.job = true;
  }
  function candEvent(ev) {
    const job = state.jobs.get(id(ev.job));
    if (!job || !isIndex(ev.cand)) return;
    let c = job.cands.get(ev.cand);
    if (!c) job.cands.set(ev.cand, (c = toCand({ cand: ev.cand })));
    const text = typeof ev.text === "string" ? ev.text : "";
    if (ev.event === "token") c.text += text;
    else if (ev.event === "retry") c.text = "";
    else if (ev.event === "done" && typeof ev.text === "string") c.text = text;  // sent whole
    for (const k of ["peer", "state", "tokens", "ttft_s", "latency_s", "attempts", "error"]) {
      if (k in ev) c[k] = ev[k];
    }
    if (job.id === shownId()) dirty.job = true;
  }
  function endEvent(ev) {
    const job = state.jobs.get(id(ev.job));
    if (!job) return;
    job.state = ev.state;
    job.took_s = ev.took_s;
    job.final = isObj(ev.final) ? ev.final : null;
    dirty.header = dirty.jobs = dirty.job = true;
  }
  function apply(ev) {
    switch (ev.type) {
      case "snapshot": snapshot(ev); break;
      case "peers": state.peers = arr(ev.peers).filter(isObj); dirty.peers = true; break;
      case "job": { const job = toJob(ev.job); if (job) addJob(job); break; }
      case "cand": candEvent(ev); break;
      case "end": endEvent(ev); break;
      default: break;                                  // a newer broker's event: ignored
    }
  }

  /* ---- drawing ---- */

  function shownId() {
    if (state.picked !== null && state.jobs.has(state.picked)) return state.picked;
    return state.order.length ? state.order[0] : null;
  }
  function schedule() { if (!frame) frame = requestAnimationFrame(draw); }
  function draw() {
    frame = 0;
    for (const [part, fn] of [["header", drawHeader], ["peers", drawPeers],
                              ["jobs", drawJobs], ["job", drawJob]]) {
      if (!dirty[part]) continue;
      dirty[part] = false;
      try { fn(); } catch (e) { console.error("drawing", part, e); }
    }
  }

  function drawHeader() {
    const b = state.broker;
    setText($("#swarm-name"), typeof b.swarm === "string" ? b.swarm : "");
    setText($("#version"), typeof b.version === "string" ? "v" + b.version : "");
    const running = [...state.jobs.values()].filter((j) => j.state === "running").length;
    setText($("#jobs-active"), running ? `${running} job${running > 1 ? "s" : ""} running` : "");
    $("#logout").hidden = b.auth !== true;
  }

  function drawPeers() {
    const peers = state.peers.map((p) => [p, peerState(p)]);
    const cards = peers.filter(([, s]) => s !== "advertised").map(([p, s]) => peerCard(p, s));
    const adverts = peers.filter(([, s]) => s === "advertised").map(([p, s]) => peerCard(p, s));
    fill($("#peers"), cards.length ? cards : [el("p", "empty", "no workers")]);
    fill($("#advertised"), adverts);
    $("#advertised-box").hidden = !adverts.length;
  }
  function drawJobs() {
    const shown = shownId();
    fill($("#jobs"), state.order.map((k) => {
      const j = state.jobs.get(k);
      const row = el("li", "job-row" + (k === shown ? " shown" : ""));
      row.dataset.job = k;
      row.dataset.state = str(j.state);
      row.append(el("span", "badge " + str(j.state), str(j.state)),
                 el("span", "job-q", clip(j.question || DASH, 80)),
                 el("span", "job-meta", `${str(j.n)} \u00d7 ${str(j.strategy)} \u00b7 ${secs(j.took_s)}`));
      row.addEventListener("click", () => pick(k));
      return row;
    }));
    $("#follow").hidden = state.picked === null;
  }
  function pick(key) {
    state.picked = key;
    dirty.jobs = dirty.job = true;
    schedule();
  }

  function drawJob() {
    const box = $("#job"), job = state.jobs.get(shownId());
    if (!job) {
      view = { id: null, cards: new Map(), final: undefined };
      delete box.dataset.job;
      delete box.dataset.state;
      fill(box, [el("p", "empty", "no job yet: ask the swarm something")]);
      return;
    }
    if (view.id !== job.id) {
      view = { id: job.id, cards: new Map(), final: undefined, head: el("div", "job-head"),
               grid: el("div", "cands"), vote: el("div", "vote-box") };
      fill(box, [view.head, view.grid, view.vote]);
    }
    setData(box, "job", job.id);
    setData(box, "state", str(job.state));
    const sign = [job.question, job.state, job.strategy, job.n, job.model, job.took_s].join("\u0000");
    if (view.sign !== sign) {
      view.sign = sign;
      drawHead(job);
    }
    const final = job.final, votes = new Map();
    for (const c of arr(obj(final).candidates)) if (isIndex(obj(c).cand)) votes.set(c.cand, c);
    const winner = obj(obj(final).winner).cand;
    for (const i of [...job.cands.keys()].sort((a, b) => a - b)) {
      drawCand(job.cands.get(i), votes.get(i), i === winner);
    }
    if (view.final !== final) {
      view.final = final;
      fill(view.vote, final ? [voteBox(final)] : []);
    }
  }
  function drawHead(job) {
    fill(view.head, [el("h2", "job-q", job.question || DASH),
                     el("span", "badge " + str(job.state), str(job.state)),
                     pair("strategy", str(job.strategy)), pair("candidates", str(job.n)),
                     ...(typeof job.model === "string" && job.model ? [pair("model", job.model)] : []),
                     pair("took", secs(job.took_s))]);
  }
  function drawCand(c, vote, won) {
    let card = view.cards.get(c.cand);
    if (!card) {
      card = { root: el("div", "cand"), head: el("div", "cand-head"), peer: el("span", "cand-peer"),
               badge: el("span", "badge"), text: el("pre", "cand-text"), meta: el("div", "cand-meta"),
               vote: el("div", "cand-vote"), error: el("div", "cand-error") };
      card.root.dataset.cand = String(c.cand);
      card.head.append(el("span", "cand-no", (c.judge ? "judge #" : "#") + c.cand), card.peer, card.badge);
      card.root.append(card.head, card.text, card.meta, card.vote, card.error);
      view.cards.set(c.cand, card);
      const after = [...view.cards.keys()].sort((a, b) => a - b).find((k) => k > c.cand);
      view.grid.insertBefore(card.root, after === undefined ? null : view.cards.get(after).root);
    }
    setData(card.root, "state", str(c.state));
    card.root.classList.toggle("winner", won);
    card.root.classList.toggle("judge", c.judge);
    setText(card.peer, str(c.peer));
    setText(card.badge, won ? "winner" : str(c.state));
    card.badge.className = "badge " + (won ? "winner" : str(c.state));
    if (card.text.textContent !== c.text) {
      const t = card.text, atEnd = t.scrollTop + t.clientHeight >= t.scrollHeight - 4;
      t.textContent = c.text;
      if (atEnd) t.scrollTop = t.scrollHeight;
    }
    setText(card.meta, `${str(c.tokens)} tokens \u00b7 TTFT ${secs(c.ttft_s)} \u00b7 ` +
                       `latency ${secs(c.latency_s)}` + (isNum(c.attempts) && c.attempts > 1
                                                           ? ` \u00b7 ${c.attempts} tries` : ""));
    setText(card.vote, vote ? candVote(vote) : "");
    const error = typeof c.error === "string" && c.error ? c.error : "";
    setText(card.error, error && c.state === "done" ? "an earlier try failed: " + error : error);
    card.error.classList.toggle("dim", c.state === "done");
  }
  function candVote(v) {
    const agreed = arr(v.agreed).filter(isIndex).map((k) => "#" + k).join(", ");
    const parts = [];
    if (typeof v.answer === "string" && v.answer) parts.push("answer " + clip(v.answer, 60));
    if (v.group !== undefined && v.group !== null) parts.push("group " + str(v.group));
    parts.push("score " + num(v.score, 3));
    if (agreed) parts.push("agreed with " + agreed);
    return parts.join(" \u00b7 ");
  }
  function voteBox(final) {
    const vote = obj(final.vote), box = el("section");
    box.id = "vote";
    if (typeof final.error === "string") {
      box.append(el("h3", "", "Failed"), el("p", "error", final.error));
      return box;
    }
    box.append(el("h3", "", "Vote: " + str(vote.method)), el("p", "reason", str(vote.reason)));
    if (isNum(vote.cancelled) && vote.cancelled > 0) {
      box.append(el("p", "dim", `early quorum: ${vote.cancelled} cancelled, ${secs(vote.saved_s)} saved`));
    }
    const judge = obj(vote.judge);
    if (isObj(vote.judge)) box.append(el("p", "dim", `judge ${str(judge.peer)}: ${str(judge.text)}`));
    const cands = arr(final.candidates).filter(isObj), winner = obj(final.winner).cand;
    const agreed = (c) => arr(c.agreed).filter(isIndex).map((k) => "#" + k).join(", ");
    const columns = [   // [heading, cell, whether any candidate has it (else left out)]
      ["cand", (c) => "#" + str(c.cand), true], ["peer", (c) => str(c.peer), true],
      ["answer", (c) => clip(str(c.answer), 80), cands.some((c) => typeof c.answer === "string" && c.answer)],
      ["group", (c) => str(c.group), cands.some((c) => c.group !== undefined && c.group !== null)],
      ["score", (c) => num(c.score, 3), true],
      ["agreed with", (c) => agreed(c) || DASH, cands.some((c) => agreed(c))],
    ].filter(([, , shown]) => shown);
    const table = el("table"), head = el("tr");
    for (const [h] of columns) head.append(el("th", "", h));
    table.append(head);
    for (const c of cands) {
      const row = el("tr", c.cand === winner ? "winner-row" : "");
      for (const [, cell] of columns) row.append(el("td", "", cell(c)));
      table.append(row);
    }
    box.append(table);
    return box;
  }

  /* ---- the stream, the connection state, the ask form ---- */

  function setConn(live) {
    const c = $("#conn"), s = live ? "live" : "reconnecting";
    setData(c, "state", s);
    setText(c, s);
  }
  let source = null, retry = 0;
  function connect() {
    retry = 0;
    source = new EventSource("/ui/events");
    source.onopen = () => setConn(true);
    source.onmessage = (msg) => {
      let events;
      try { events = JSON.parse(msg.data); } catch (e) { return; }
      for (const ev of Array.isArray(events) ? events : [events]) {
        try { apply(obj(ev)); } catch (e) { console.error("event", ev, e); }
      }
      setConn(true);
      schedule();
    };
    source.onerror = () => {
      setConn(false);
      if (source.readyState === EventSource.CLOSED && !retry) {
        source.close();
        retry = setTimeout(giveUpOrRetry, RECONNECT_MS);
      }
    };
  }
  async function giveUpOrRetry() {
    try {   // the stream refused: a session that ended shows the login form again
      if ((await fetch("/", { method: "HEAD", cache: "no-store" })).status === 401) {
        location.reload();
        return;
      }
    } catch (e) { /* the broker is away: try the stream again */ }
    connect();
  }

  function askBody() {
    const int = (sel) => Number.parseInt($(sel).value, 10);
    return { question: $("#ask-question").value.trim(), candidates: int("#ask-candidates"),
             max_tokens: int("#ask-max-tokens"), strategy: $("#ask-strategy").value,
             temperature: Number.parseFloat($("#ask-temperature").value) };
  }
  async function ask(e) {
    e.preventDefault();
    const body = askBody(), error = $("#ask-error"), button = $("#ask-submit");
    setText(error, "");
    if (!body.question) { setText(error, "Write a question first."); return; }
    button.disabled = true;
    try {
      const r = await fetch("/ui/ask", { method: "POST", body: JSON.stringify(body),
                                         headers: { "Content-Type": "application/json" } });
      let data = null;
      try { data = await r.json(); } catch (err) { data = null; }
      const key = id(obj(data).job);
      if (r.ok && key !== null) {
        if (!state.jobs.has(key)) {   // the stream's job event may come after this answer
          addJob(toJob({ id: key, question: body.question, strategy: body.strategy,
                         n: body.candidates, state: "running", created: Date.now() / 1000 }));
        }
        pick(key);
      } else {
        const msg = obj(obj(data).error).message;
        setText(error, typeof msg === "string" && msg ? msg : `The broker answered ${r.status}.`);
      }
    } catch (err) {
      setText(error, "The broker cannot be reached; try again when the page is live.");
    } finally {
      button.disabled = false;
    }
  }

  $("#ask").addEventListener("submit", ask);
  $("#ask-question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("#ask").requestSubmit();
  });
  $("#follow").addEventListener("click", () => { state.picked = null; dirty.jobs = dirty.job = true; schedule(); });
  connect();
  schedule();
})();
