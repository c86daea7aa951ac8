/* Swarm's live view: small helpers shared by its scripts. Every value off the stream is
   optional and may be odd: these show it as "—". Text goes in with textContent only. */
"use strict";
window.SwarmDom = (function () {
  const DASH = "\u2014";
  const $ = (sel) => document.querySelector(sel);
  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const obj = (v) => (isObj(v) ? v : {});
  const arr = (v) => (Array.isArray(v) ? v : []);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const isIndex = (v) => Number.isInteger(v) && v >= 0;
  const str = (v) => (typeof v === "string" && v !== "" ? v : isNum(v) ? String(v) : DASH);
  const num = (v, digits = 2) => (isNum(v) ? v.toFixed(digits) : DASH);
  const secs = (v) => (isNum(v) ? v.toFixed(2) + " s" : DASH);
  const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "\u2026" : s);
  const id = (v) => (typeof v === "string" && v ? v : isNum(v) ? String(v) : null);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(e, text) { if (e.textContent !== text) e.textContent = text; }
  function setData(e, key, value) { if (e.dataset[key] !== value) e.dataset[key] = value; }
  function fill(parent, children) { parent.replaceChildren(...children); }
  function pair(label, value) {
    const span = el("span", "kv");
    span.append(el("b", "", label + " "), document.createTextNode(value));
    return span;
  }

  return { DASH, $, isObj, obj, arr, isNum, isIndex, str, num, secs, clip, id, el, setText, setData, fill, pair };
})();
