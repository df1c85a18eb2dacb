"use strict";
// The verification page. Marks are queued: a key press marks the image under the cursor at
// that moment and moves the cursor at once; the queue sends the marks to the server one after
// the other, in key order, and keeps them (also in localStorage) until the server has them.
const API = window.location.pathname.replace(/\/$/, "") + "/api";
const S = {c: null, sid: null, items: [], cur: -1, done: false, loading: false, seq: 0, undo: []};
const $ = (id) => document.getElementById(id);
const LABEL = {relevant: "relevant", not_relevant: "not relevant", unsure: "unsure"};
const KEYS = {"1": "relevant", "y": "relevant", "2": "not_relevant", "n": "not_relevant",
              "3": "unsure", "u": "unsure", "0": "clear", "x": "clear"};
// One queue per tab (its id survives a reload of the tab), so two tabs never overwrite each
// other's unsent marks.
const TAB = sessionStorage.getItem("inquire_tab") || Math.random().toString(36).slice(2);
sessionStorage.setItem("inquire_tab", TAB);
const STORE = "inquire_verify_queue:" + TAB;
const RETRY_MS = 1500;
// Q.pending: marks not yet on the server, in key order; Q.failed: refused by the server
// (4xx), kept for a retry (`r`); Q.latest: key -> number of the newest mark of that key.
const Q = {pending: [], failed: [], latest: {}, n: 0, busy: false, offline: false, timer: null};
const channel = "BroadcastChannel" in window ? new BroadcastChannel("inquire-verify") : null;

function who() { return $("who").value.trim(); }
function setWho(v) {
  localStorage.setItem("inquire_who", v);
  document.cookie = "inquire_who=" + encodeURIComponent(v) + ";path=/;max-age=31536000;SameSite=Lax";
}
function status(msg, err) { const s = $("status"); s.textContent = msg; s.className = err ? "err" : ""; }
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c])); }

// --- requests -----------------------------------------------------------------------------
// A failed request throws an Error with .network (no answer at all) or .status (HTTP code).
async function call(url, opts) {
  let r;
  try { r = await fetch(url, Object.assign({credentials: "same-origin"}, opts)); }
  catch (e) { const err = new Error("the server does not answer"); err.network = true; throw err; }
  if (!r.ok) {
    let d = r.statusText;
    try { const j = await r.json(); d = j.detail || j.error || d; } catch (e) { /* not JSON */ }
    const err = new Error(typeof d === "string" ? d : JSON.stringify(d)); err.status = r.status; throw err;
  }
  if (Q.offline) online();
  return r;
}
function csrfToken() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.getAttribute("content") : null;
}
// Every state-changing request (POST, PUT, DELETE) goes through here: it carries the CSRF token.
function send(method, url, body) {
  const headers = {"content-type": "application/json"};
  const token = csrfToken();
  if (token) headers["X-CSRF-Token"] = token;
  return call(url, {method, headers, body: JSON.stringify(body)});
}
function retryable(e) { return e.network || (e.status >= 500) || e.status === 429; }

// --- offline banner -----------------------------------------------------------------------
function offline() {
  Q.offline = true;
  showBanner();
  if (!Q.timer) Q.timer = setTimeout(probe, RETRY_MS);
}
function online() {
  Q.offline = false;
  showBanner();
  status(Q.pending.length ? "server is back; sending your marks" : "server is back");
}
function showBanner() {
  const b = $("offline");
  if (!Q.offline) { b.hidden = true; return; }
  const n = Q.pending.length;
  b.textContent = "The server does not answer. " + (n ? `${n} mark${n > 1 ? "s are" : " is"} not saved yet: ` +
    "they are kept in this browser and sent when it is back." : "Retrying…");
  b.hidden = false;
}
async function probe() {
  Q.timer = null;
  if (Q.pending.length) { pump(); return; }
  try { await call(API + "/collections"); resync(); }
  catch (e) { if (e.network) offline(); }
}

// --- the mark queue -----------------------------------------------------------------------
function keyOf(m) { return `${m.c}|${m.sid}|${m.image_id}|${m.who}`; }
function save() {
  const strip = (m) => ({c: m.c, sid: m.sid, image_id: m.image_id, who: m.who, mark: m.mark, n: m.n, error: m.error});
  localStorage.setItem(STORE, JSON.stringify({pending: Q.pending.map(strip), failed: Q.failed.map(strip)}));
}
function restore() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (e) { saved = null; }
  if (!saved) return;
  for (const m of [...saved.pending, ...saved.failed]) { Q.n = Math.max(Q.n, m.n); Q.latest[keyOf(m)] = m.n; }
  Q.pending = saved.pending; Q.failed = saved.failed;
}
function enqueue(m) {
  m.n = ++Q.n;
  Q.latest[keyOf(m)] = m.n;
  Q.failed = Q.failed.filter(f => keyOf(f) !== keyOf(m));  // a newer mark replaces a refused one
  Q.pending.push(m);
  save();
  if (Q.offline) showBanner();
  pump();
}
// The state of the current user's mark on an item: pending, failed, saved or "" (untouched).
function stateOf(it) {
  const k = `${S.c}|${S.sid}|${it.image_id}|${who()}`;
  if (Q.pending.some(m => keyOf(m) === k)) return "pending";
  if (Q.failed.some(m => keyOf(m) === k)) return "failed";
  return it.touched ? "saved" : "";
}
async function pump() {
  if (Q.busy) return;
  Q.busy = true;
  try {
    while (Q.pending.length) {
      const m = Q.pending[0];
      if (Q.latest[keyOf(m)] !== m.n) { Q.pending.shift(); save(); continue; }  // a newer mark follows
      try {
        await send("PUT", `${API}/c/${encodeURIComponent(m.c)}/searches/${encodeURIComponent(m.sid)}/marks`,
          {image_id: m.image_id, who: m.who, mark: m.mark});
      } catch (e) {
        if (retryable(e)) { offline(); return; }
        m.error = e.message;
        Q.failed.push(m);
        status(`not saved: image ${m.image_id} ${m.mark}: ${e.message} (press r to retry)`, true);
      }
      Q.pending.shift();
      save();
      if (!m.error && channel) channel.postMessage({c: m.c, sid: m.sid, image_id: m.image_id, who: m.who, mark: m.mark});
      repaint(m);
    }
    showBanner();
    showRetry();
    refreshSide();
  } finally { Q.busy = false; }
}
function showRetry() {
  const b = $("retry");
  b.hidden = !Q.failed.length;
  b.textContent = `retry ${Q.failed.length} failed mark${Q.failed.length === 1 ? "" : "s"} (r)`;
}
function repaint(m) {
  if (m.c !== S.c || m.sid !== S.sid) return;
  const i = S.items.findIndex(it => it.image_id === m.image_id);
  if (i >= 0) paint($("r" + i), S.items[i]);
}
function retryFailed() {
  if (!Q.failed.length) { status("no failed marks to retry"); return; }
  const again = Q.failed.filter(m => Q.latest[keyOf(m)] === m.n);
  Q.failed = [];
  for (const m of again) { delete m.error; Q.pending.push(m); }
  save();
  showRetry();
  S.items.forEach((it, i) => paint($("r" + i), it));
  pump();
}

// --- searches -----------------------------------------------------------------------------
async function loadCollections() {
  const cs = await (await call(API + "/collections")).json();
  $("collection").innerHTML = cs.map(c => `<option value="${esc(c.name)}">${esc(c.name)} (${c.images})</option>`).join("");
}
async function loadSaved() {
  const c = $("collection").value;
  if (!c) return;
  const ss = await (await call(`${API}/c/${encodeURIComponent(c)}/searches`)).json();
  $("saved").innerHTML = '<option value="">saved searches…</option>' + ss.map(s => {
    const q = JSON.parse(s.request);
    return `<option value="${esc(s.search_id)}">${esc(q.text || "(by example)")} · ${s.n_marks} marks</option>`;
  }).join("");
}
function readHash() { return Object.fromEntries(new URLSearchParams(location.hash.slice(1))); }

async function runSearch(ev) {
  if (ev) ev.preventDefault();
  S.c = $("collection").value;
  const body = {text: $("query").value, taxa: $("taxon").value ? $("taxon").value.split(",") : [],
    date_from: $("from").value || null, date_to: $("to").value || null, bbox: $("bbox").value || null,
    under: $("under").value ? $("under").value.split(",") : [],
    like: $("like").value ? $("like").value.split(",") : [], who: who()};
  try {
    const r = await (await send("POST", `${API}/c/${encodeURIComponent(S.c)}/searches`, body)).json();
    location.hash = `c=${encodeURIComponent(S.c)}&s=${r.search_id}`;
    await openSearch(S.c, r.search_id);
    await loadSaved();
  } catch (e) { if (e.network) offline(); status(e.message, true); }
}

async function openSearch(c, sid) {
  S.c = c; S.sid = sid; S.items = []; S.cur = -1; S.done = false; S.undo = [];
  $("list").innerHTML = "";
  await more();
  if (S.items.length) select(0);
  $("list").focus({preventScroll: true});  // so the first key press marks the first result
  refreshSide();
}

async function more() {
  if (S.loading || S.done || !S.sid) return;
  S.loading = true;
  try {
    const first = S.items.length === 0;
    // Ranking more results changes the saved search: a POST, like every change.
    const url = `${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}/results`;
    const r = await (await send("POST", url, {offset: S.items.length, limit: 24})).json();
    if (first) {  // fill the form with the search shown, but never overwrite later typing
      const q = r.request;
      $("query").value = q.text; $("taxon").value = q.filters.taxa.join(",");
      $("from").value = q.filters.date_from || ""; $("to").value = q.filters.date_to || "";
      $("bbox").value = q.filters.bbox ? q.filters.bbox.join(",") : ""; $("like").value = q.like.join(",");
      $("under").value = (q.filters.under || []).join(",");
    }
    if (first) showRound(r.round || 0, r.round_model || "", r.round_relevant || 0, r.round_not_relevant || 0);
    for (const it of r.results) {
      keepLocal(it);
      S.items.push(it);
      $("list").appendChild(render(it, S.items.length - 1));
    }
    if (r.results.length < 24) S.done = true;
    status(`${S.items.length} results shown` + (S.done ? " (end of ranking)" : ""));
  } catch (e) { if (e.network) offline(); status(e.message, true); }
  S.loading = false;
}
// Marks still queued here are newer than what the server answered: show them instead.
function keepLocal(it) {
  for (const m of [...Q.failed, ...Q.pending]) {
    if (m.c === S.c && m.sid === S.sid && m.image_id === it.image_id) {
      if (m.mark === "clear") delete it.marks[m.who]; else it.marks[m.who] = m.mark;
      it.touched = true;
    }
  }
}

function render(it, i) {
  const d = document.createElement("div");
  d.className = "result"; d.id = "r" + i; d.dataset.imageId = it.image_id;
  d.onclick = (ev) => { if (!ev.target.closest("button")) select(i); };
  d.innerHTML = `<img loading="lazy" src="${API}/c/${encodeURIComponent(S.c)}/images/${it.image_id}?size=256" alt="image ${it.image_id}">
  <div class="meta"><b>#${it.rank}</b> score ${it.score.toFixed(4)} · image ${it.image_id}${it.round ? ` · <span class="round" title="ranked by what the marks taught (round ${it.round})">round ${it.round}</span>` : ""}<br>
  ${esc(it.taxon || "")} ${esc((it.date || "").slice(0, 10))}
  ${it.lat == null ? "" : "· " + it.lat.toFixed(3) + ", " + it.lon.toFixed(3)}<br>
  <span class="path">${esc(it.path || "")}</span><br>
  mine: <span class="mark mine"></span> <span class="state"></span> <span class="others"></span>
  <div class="tap"><button type="button" data-mark="relevant" title="relevant (1 or y)">&#10003; relevant</button>
  <button type="button" data-mark="not_relevant" title="not relevant (2 or n)">&#10007; not</button>
  <button type="button" data-mark="unsure" title="unsure (3 or u)">? unsure</button></div></div>`;
  d.querySelectorAll(".tap button").forEach(b => b.addEventListener("click", () => markAt(i, b.dataset.mark)));
  paint(d, it);
  return d;
}
function paint(d, it) {
  if (!d) return;
  const m = it.marks[who()];
  const mine = d.querySelector(".mine");
  mine.textContent = m ? LABEL[m] : "—"; mine.className = "mark mine" + (m ? " m-" + m : "");
  d.dataset.mark = m || "";
  const st = stateOf(it);
  d.dataset.state = st;
  const s = d.querySelector(".state");
  s.className = "state" + (st ? " s-" + st : "");
  s.textContent = {pending: "saving…", failed: "not saved", saved: "saved", "": ""}[st];
  s.title = st === "failed" ? "the server refused this mark; press r to retry" : "";
  d.querySelector(".others").innerHTML = Object.entries(it.marks).filter(([w]) => w !== who())
    .map(([w, v]) => `<span class="m-${v}">${esc(w)}: ${LABEL[v]}</span>`).join("");
}
function select(i) {
  if (i < 0 || i >= S.items.length) return;
  if (S.cur >= 0) $("r" + S.cur).classList.remove("current");
  S.cur = i; const d = $("r" + i); d.classList.add("current");
  d.scrollIntoView({block: "nearest"});
  if (i >= S.items.length - 3) more();
}
// Mark item i now (locally at once, on the server through the queue).
function apply(i, value) {
  const it = S.items[i];
  const prev = it.marks[who()] || "clear";
  if (value === "clear") delete it.marks[who()]; else it.marks[who()] = value;
  it.touched = true;
  enqueue({c: S.c, sid: S.sid, image_id: it.image_id, who: who(), mark: value});
  it.localN = Q.n;
  paint($("r" + i), it);
  return prev;
}
function markAt(i, value) {
  if (i < 0 || i >= S.items.length) return;
  if (!who()) { status("type your name first (top left)", true); $("who").focus(); return; }
  const prev = apply(i, value);
  S.undo.push({i, prev});
  status(`image ${S.items[i].image_id}: ${LABEL[value] || "cleared"}`);
  select(i + 1);
}
// Relevance feedback: re-rank what nobody marked yet from the marks (a new ranking round).
// Results up to the cursor (and every marked one) stay; the rest is replaced.
async function learn() {
  if (!S.sid) { status("run or open a search first", true); return; }
  if (Q.pending.length) { status(`wait: ${Q.pending.length} mark(s) still being saved`, true); pump(); return; }
  const url = `${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}/learn`;
  try {
    const r = await (await send("POST", url, {shown: S.cur + 1, model: $("fbmodel").value, who: who() || null, depth: 24})).json();
    const keep = S.items.filter(it => it.rank <= r.after_rank).length;
    for (let i = keep; i < S.items.length; i++) { const d = $("r" + i); if (d) d.remove(); }
    S.items.length = keep;
    S.undo = S.undo.filter(u => u.i < keep);
    for (const it of r.results) { keepLocal(it); S.items.push(it); $("list").appendChild(render(it, S.items.length - 1)); }
    S.done = r.results.length < 24;
    showRound(r.round, r.model, r.n_relevant, r.n_not_relevant);
    if (keep < S.items.length) select(keep);
    status(`ranking round ${r.round}: results after #${r.after_rank} re-ranked from ${r.n_relevant} relevant and ${r.n_not_relevant} not relevant marks`);
  } catch (e) { if (e.network) offline(); status(e.message, true); }
}
function showRound(n, model, pos, neg) {
  $("round").textContent = n ? `ranking: round ${n} (${model}, ${pos} relevant / ${neg} not)` : "ranking: first search";
}
function undo() {
  const u = S.undo.pop();
  if (!u) { status("nothing to undo"); return; }
  apply(u.i, u.prev);
  select(u.i);
  status(`undone: image ${S.items[u.i].image_id} is ${LABEL[u.prev] || "unmarked"} again`);
}

// Marks made elsewhere (another tab, another person): from the channel at once, and from the
// server when the page becomes visible again. Marks still queued here are never overwritten.
function remoteMark(msg) {
  if (msg.c !== S.c || msg.sid !== S.sid) return;
  const i = S.items.findIndex(it => it.image_id === msg.image_id);
  if (i < 0) return;
  const it = S.items[i];
  if (msg.who === who() && stateOf(it) === "pending") return;
  if (msg.mark === "clear") delete it.marks[msg.who]; else it.marks[msg.who] = msg.mark;
  paint($("r" + i), it);
  refreshSide();
}
async function resync() {
  if (!S.sid || !S.items.length) return;
  const startN = Q.n;  // marks made after this are newer than anything the answer can hold
  try {
    for (let off = 0; off < S.items.length; off += 500) {
      const url = `${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}/results?offset=${off}&limit=${Math.min(500, S.items.length - off)}`;
      const r = await (await call(url)).json();
      for (const fresh of r.results) {
        const i = S.items.findIndex(it => it.image_id === fresh.image_id);
        if (i < 0) continue;
        const it = S.items[i];
        const mine = it.marks[who()];
        keepLocal(fresh);
        it.marks = fresh.marks;
        if (it.localN > startN) {
          if (mine) it.marks[who()] = mine; else delete it.marks[who()];
        }
        paint($("r" + i), it);
      }
    }
    refreshSide();
  } catch (e) { if (e.network) offline(); }
}

async function refreshSide() {
  if (!S.sid) return;
  const base = `${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}`;
  const w = $("mine").checked ? "&who=" + encodeURIComponent(who()) : "";
  const my = ++S.seq;  // an older refresh finishing late must not overwrite a newer one
  try {
    const s = await (await call(`${base}/summary?x=1${w}`)).json();
    const svg = await (await call(`${base}/trend.svg?by=${$("by").value}${w}`)).text();
    const eff = await (await call(`${base}/efficiency.svg?x=1${w}`)).text();
    if (my !== S.seq) return;
    const e = s.efficiency, a = s.agreement;
    $("summary").innerHTML = `<h3>Survey effort</h3><p id="effort">${e.inspected} images inspected
      (down to rank ${e.deepest_rank}), <b>${e.positives}</b> positives found` +
      (e.inspected ? ` (${(100 * e.positives / e.inspected).toFixed(1)}%)` : "") + `</p>
      <h3>People</h3><p>` + Object.entries(a.people).map(([p, c]) =>
      `${esc(p)}: ${c.relevant} relevant, ${c.not_relevant} not, ${c.unsure} unsure`).join("<br>") +
      `</p><p>${a.images_marked_by_several} images marked by several people` +
      (a.agreement == null ? "" : `, all agree on ${(100 * a.agreement).toFixed(0)}%`) + "</p>";
    $("trend").innerHTML = svg;
    $("effsvg").innerHTML = eff;
    $("exports").innerHTML = `Export marks: <a id="csv" href="${base}/export.csv?x=1${w}">CSV</a> ·
      <a href="${base}/export.parquet?x=1${w}">parquet</a> ·
      <a id="inquire-search" href="${base}/export/inquire-search?x=1${w}">INQUIRE-Search CSV</a> ·
      <a id="dwca" href="${base}/export/dwca?x=1${w}">Darwin Core (GBIF)</a>`;
  } catch (e) { if (e.network) offline(); else status(e.message, true); }
}

document.addEventListener("keydown", (ev) => {
  const tag = ev.target.tagName;
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === "j" || k === "ArrowDown") { select(S.cur + 1); ev.preventDefault(); }
  else if (k === "k" || k === "ArrowUp") { select(S.cur - 1); ev.preventDefault(); }
  else if (k === "m") { more(); }
  else if (k === "z") { undo(); ev.preventDefault(); }
  else if (k === "r") { retryFailed(); ev.preventDefault(); }
  else if (k === "l") { learn(); ev.preventDefault(); }
  else if (k in KEYS) { markAt(S.cur, KEYS[k]); ev.preventDefault(); }
});
$("search").addEventListener("submit", runSearch);
$("retry").addEventListener("click", retryFailed);
$("learn").addEventListener("click", learn);
$("collection").addEventListener("change", () => loadSaved().catch(e => status(e.message, true)));
$("saved").addEventListener("change", () => {
  const sid = $("saved").value, c = $("collection").value;
  if (!sid) return;
  location.hash = `c=${encodeURIComponent(c)}&s=${sid}`;
  openSearch(c, sid);
});
$("by").addEventListener("change", refreshSide);
$("mine").addEventListener("change", refreshSide);
$("who").addEventListener("change", () => { setWho(who()); S.items.forEach((it, i) => paint($("r" + i), it)); refreshSide(); });
if (channel) channel.onmessage = (ev) => remoteMark(ev.data);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") resync(); });
window.addEventListener("focus", resync);
window.addEventListener("online", () => { if (Q.offline) probe(); });

(async () => {
  $("who").value = localStorage.getItem("inquire_who") || "";
  restore();
  showRetry();
  if (Q.pending.length) pump();
  try { await loadCollections(); } catch (e) { if (e.network) offline(); status(e.message, true); return; }
  const h = readHash();
  if (h.c) $("collection").value = h.c;
  await loadSaved().catch(e => status(e.message, true));
  if (h.c && h.s) await openSearch(h.c, h.s);
})();
