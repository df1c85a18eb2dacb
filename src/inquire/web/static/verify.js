"use strict";
// The verification page. Marks are queued: a key press marks the image under the cursor at
// that moment and moves the cursor at once; the queue sends the marks to the server one after
// the other, in key order, and keeps them (also in localStorage) until the server has them.
// Key presses, taps and clicks on results go through a KeyQueue (keyqueue.js): each applies,
// in order, to the result it was meant for, also when that result is still loading.
// No value from the URL, the server or the user is ever parsed as HTML: elements are built
// with h() and text goes in as text (charts are parsed as SVG, see svgInto).
const API = window.location.pathname.replace(/\/$/, "") + "/api";
const S = {c: null, sid: null, items: [], done: false, loading: null, round: 0, seq: 0, gen: 0, failedAt: -Infinity, retry: null, loadError: null,
           shared: false, syncSeq: 0, resyncTimer: null, asked: 0, resend: 0, edits: 0, formEdits: 0, askedAt: null};
// S.asked: how many searches were asked for (sent, picked from the saved list, linked); an
// answer for an older one than the last is dropped, so the page shows the one asked last.
// S.edits / S.formEdits: how often the user typed in a field (any / the search form), and
// S.askedAt what they were, and which element had the focus, when the last search was asked:
// typing since then means the user is busy in a field (a link opens at once, maybe while they
// type), so the results leave the form's text and the focus alone (a letter meant for a
// field must not become a mark).
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
const PAGE = 24;            // results per load
const MAX_RESTORE = 2000;   // results shown again at most after a reload
// Q.pending: marks not yet on the server, in key order; Q.failed: refused by the server
// (4xx), kept for a retry (`r`); Q.latest: key -> number of the newest mark of that key.
// Q.errors: how many tries in a row the server answered with an error (5xx, 429).
const Q = {pending: [], failed: [], latest: {}, n: 0, busy: false, offline: false, timer: null, errors: 0};
const channel = "BroadcastChannel" in window ? new BroadcastChannel("inquire-verify") : null;

function who() { return $("who").value.trim(); }
function setWho(v) {
  localStorage.setItem("inquire_who", v);
  document.cookie = "inquire_who=" + encodeURIComponent(v) + ";path=/;max-age=31536000;SameSite=Lax";
}
function status(msg, err) { const s = $("status"); s.textContent = msg; s.className = err ? "err" : ""; }
// An element with attributes and children (strings become text nodes, never markup).
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) if (k != null && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
// A chart from the server (SVG text) into box: parsed as XML, only an <svg> root is taken,
// without scripts, foreign HTML or event attributes.
function svgInto(box, text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = doc.documentElement;
  if (!svg || svg.localName !== "svg" || doc.getElementsByTagName("parsererror").length) { box.replaceChildren(); return; }
  for (const bad of svg.querySelectorAll("script, foreignObject")) bad.remove();
  for (const el of [svg, ...svg.querySelectorAll("*")]) {
    for (const a of [...el.attributes]) if (/^on/i.test(a.name) || /^\s*javascript:/i.test(a.value)) el.removeAttribute(a.name);
  }
  box.replaceChildren(document.importNode(svg, true));
}
function q(sid) { return encodeURIComponent(sid); }
// How many results of a search were shown (kept across reloads, so they show again).
function shownKey(c, sid) { return `inquire_shown:${c}|${sid}`; }
function shownBefore(c, sid) {
  try { return JSON.parse(localStorage.getItem(shownKey(c, sid)) || "null") || {n: 0, cur: 0}; }
  catch (e) { return {n: 0, cur: 0}; }
}
function rememberShown() {
  if (!S.sid) return;
  const had = shownBefore(S.c, S.sid);
  localStorage.setItem(shownKey(S.c, S.sid), JSON.stringify({n: Math.max(had.n || 0, S.items.length), cur: KQ.cur}));
}

// --- requests -----------------------------------------------------------------------------
// A failed request throws an Error with .network (no answer at all) or .status (HTTP code).
async function call(url, opts) {
  let r;
  try { r = await fetch(url, Object.assign({credentials: "same-origin"}, opts)); }
  catch (e) { const err = new Error("the server does not answer"); err.network = true; throw err; }
  // Any answer but a server error means the server is there, a refusal too (a restarted
  // server refuses the page's old token): the page stops saying it does not answer.
  if (Q.offline && r.status < 500) online();
  if (!r.ok) {
    let d = r.statusText;
    try { const j = await r.json(); d = j.detail || j.error || d; } catch (e) { /* not JSON */ }
    const err = new Error(typeof d === "string" ? d : JSON.stringify(d)); err.status = r.status; throw err;
  }
  return r;
}
function csrfToken() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.getAttribute("content") : null;
}
// Every state-changing request (POST, PUT, DELETE) goes through here: it carries the CSRF token.
// A server that no longer knows the page's token (it was restarted) refuses it: the page asks
// for a fresh one and sends the request once more.
async function send(method, url, body) {
  try { return await sendOnce(method, url, body); }
  catch (e) {
    if (e.status !== 403 || !/X-CSRF-Token/.test(e.message)) throw e;
    await freshToken();
    return sendOnce(method, url, body);
  }
}
function sendOnce(method, url, body) {
  const headers = {"content-type": "application/json"};
  const token = csrfToken();
  if (token) headers["X-CSRF-Token"] = token;
  return call(url, {method, headers, body: JSON.stringify(body)});
}
async function freshToken() {
  const r = await (await call(API + "/token")).json();
  let m = document.querySelector('meta[name="csrf-token"]');
  if (!m) { m = document.createElement("meta"); m.setAttribute("name", "csrf-token"); document.head.appendChild(m); }
  m.setAttribute("content", String(r.token));
}
function retryable(e) { return e.network || (e.status >= 500) || e.status === 429; }

// --- offline banner -----------------------------------------------------------------------
// The server does not answer (no e, or e.network), or answers a retryable request with an error
// (e: 5xx, 429): the page tries again a little later: every RETRY_MS while there is no answer
// (a try costs the server nothing), later and later while it answers with errors (each try
// is work for a server in trouble: 1.5 s, 3 s, 6 s, … at most 24 s).
function offline(e) {
  Q.offline = true;
  Q.errors = e && !e.network ? Q.errors + 1 : 0;
  showBanner();
  if (!Q.timer) Q.timer = setTimeout(probe, RETRY_MS * Math.min(2 ** Math.max(Q.errors - 1, 0), 16));
}
function online() {
  Q.offline = false;
  Q.errors = 0;
  showBanner();
  status(Q.pending.length ? "server is back; sending your marks" : "server is back");
  if (!$("collection").options.length) start();  // the page's first requests got no answer
  // a search that got no answer, unless another was asked for or the form changed since
  if (S.resend) { const again = S.resend === S.asked && !typedSinceAsked(true); S.resend = 0; if (again) runSearch(); }
  // nor its search (unless a load or a retry of it is under way: that one goes on)
  if (S.sid && !S.items.length && S.loadError && S.loadError.retry && !S.loading && !S.retry) openSearch(S.c, S.sid);
}
function showBanner() {
  const b = $("offline");
  if (!Q.offline) { b.hidden = true; return; }
  const n = Q.pending.length;
  b.textContent = (Q.errors ? "The server answers with errors. " : "The server does not answer. ") + (n ? `${n} mark${n > 1 ? "s are" : " is"} not saved yet: ` +
    "they are kept in this browser and sent when it is back." : "Retrying…");
  b.hidden = false;
}
async function probe() {
  Q.timer = null;
  if (Q.pending.length) { pump(); return; }
  try { await call(API + "/collections"); resync(); }
  catch (e) { if (retryable(e)) offline(e); }  // still away, or still in trouble: again later
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
        if (retryable(e)) { offline(e); return; }
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
    if (S.shared) laterResync();  // another tab marks this search too: read what was saved
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
function options(sel, items) { sel.replaceChildren(...items.map(([v, t]) => h("option", {value: v}, t))); }
async function loadCollections() {
  const cs = await (await call(API + "/collections")).json();
  options($("collection"), cs.map(c => [c.name, `${c.name} (${c.images})`]));
}
// The list of collections, loaded once; a search sent before it has arrived (a slow server)
// waits for it, and one sent after it failed asks again.
let collectionsLoad = null;
function collectionsReady() {
  if ($("collection").options.length) return Promise.resolve();
  if (!collectionsLoad) collectionsLoad = loadCollections().finally(() => { collectionsLoad = null; });
  return collectionsLoad;
}
// Show collection c when the list has it (a link may name one that is not there: the select
// then keeps a collection that is).
function chooseCollection(c) {
  const sel = $("collection");
  if ([...sel.options].some(o => o.value === c)) sel.value = c;
}
// The saved searches of the collection chosen. An answer for a collection no longer chosen
// (the user switched while it came) or older than a newer one is dropped.
let savedSeq = 0;
async function loadSaved() {
  const c = $("collection").value;
  if (!c) return;
  const my = ++savedSeq;
  const sel = $("saved");  // another collection's list is not offered while this one's loads
  if (sel.dataset.c !== c) { options(sel, [["", "saved searches…"]]); sel.dataset.c = c; }
  const ss = await (await call(`${API}/c/${encodeURIComponent(c)}/searches`)).json();
  if (my !== savedSeq || c !== $("collection").value) return;
  options($("saved"), [["", "saved searches…"], ...ss.map(s => {
    let text = "";
    try { text = JSON.parse(s.request).text; } catch (e) { text = ""; }
    return [s.search_id, `${text || "(by example)"} · ${s.n_marks} marks`];
  })]);
}
function ask() {
  S.askedAt = {edits: S.edits, formEdits: S.formEdits, focus: document.activeElement};
  return ++S.asked;
}
function typedSinceAsked(form) {
  const a = S.askedAt;
  return !!a && (form ? S.formEdits !== a.formEdits : S.edits !== a.edits);
}
function readHash() { return Object.fromEntries(new URLSearchParams(location.hash.slice(1))); }
function setHash(c, sid) { location.hash = new URLSearchParams({c: c, s: sid}).toString(); }

async function runSearch(ev) {
  if (ev) ev.preventDefault();
  const my = ask();
  // A search that got no answer (the lists, or the search itself) is sent again once the
  // server is back (online()), unless another was asked for meanwhile.
  try { await collectionsReady(); } catch (e) {
    if (e.network) { S.resend = my; offline(); }
    status(e.message, true); return;
  }
  if (my !== S.asked) return;  // sent again meanwhile: the newer one runs
  const c = $("collection").value;
  if (!c) {
    status("There is no collection to search yet: make one with `inquire collection create`.", true);
    return;
  }
  const body = {text: $("query").value, taxa: $("taxon").value ? $("taxon").value.split(",") : [],
    date_from: $("from").value || null, date_to: $("to").value || null, bbox: $("bbox").value || null,
    under: $("under").value ? $("under").value.split(",") : [],
    like: $("like").value ? $("like").value.split(",") : [], who: who()};
  let made = false;
  try {
    const r = await (await send("POST", `${API}/c/${encodeURIComponent(c)}/searches`, body)).json();
    made = true;
    if (my !== S.asked) return;  // another search was asked for while this one was made
    setHash(c, r.search_id);
    await openSearch(c, r.search_id);
    await loadSaved();
  } catch (e) {
    if (e.network && my === S.asked && !made) S.resend = my;  // not made: sent again
    if (e.network) offline();
    if (my === S.asked) status(e.message, true);
  }
}

// Forget the search shown (its results, loads, summary): late answers for it are dropped.
function closeSearch(c, sid) {
  S.c = c; S.sid = sid; S.items = []; S.done = false; S.loading = null; S.loadError = null; S.shared = false;
  S.failedAt = -Infinity; clearTimeout(S.retry); S.retry = null;  // another search's failed load: not this one's
  const gen = ++S.gen;
  KQ.reset();
  $("list").replaceChildren();
  // The summary, charts and export links were the search's before: gone, and one of that
  // search answering late is dropped (this one's come once its results are there).
  S.seq++;
  for (const id of ["summary", "trend", "effsvg", "exports"]) $(id).replaceChildren();
  showRound(0);
  if (!sid) {
    status("no search shown");
    $("saved").value = "";  // so picking the closed search from the list opens it again
  }
  return gen;
}
async function openSearch(c, sid) {
  const gen = closeSearch(c, sid);
  // After a reload, as many results as were shown before come back, the cursor where it was.
  const before = shownBefore(c, sid);
  await more(Math.min(Math.max(PAGE, before.n || 0), MAX_RESTORE));
  if (gen !== S.gen) return;  // another search was opened meanwhile: this one is gone
  if (before.cur > 0 && before.cur < S.items.length) KQ.push({op: "goto", i: before.cur});
  // So the first key press marks the first result; not while the user is busy in a field.
  const a = document.activeElement;
  if (!typedSinceAsked(false) && (!a || a === document.body || a === $("list") || a === (S.askedAt || {}).focus)) {
    $("list").focus({preventScroll: true});
  }
  refreshSide();
}

// Load `want` more results (pages of at most 500). Resolves when they are shown; a call
// while a load is under way waits for that load instead. After a failed load the next try
// comes a little later (server errors, no answer) or, when the server refused the request
// (4xx: it would refuse it again), only when the user asks (`force`: the m key).
function more(want, force) {
  if (S.loading) return S.loading;
  if (S.done || !S.sid) return Promise.resolve();
  if (S.loadError && !S.loadError.retry && !force) return Promise.resolve();
  if (!force && Date.now() < S.failedAt + RETRY_MS) {  // the last load failed: try again a little later
    if (!S.retry) S.retry = setTimeout(() => { S.retry = null; more(want); }, RETRY_MS);
    return Promise.resolve();
  }
  const gen = S.gen;
  S.loading = (async () => {
    try {
      let left = want || PAGE;
      while (left > 0 && !S.done && gen === S.gen) {
        const limit = Math.min(left, 500);
        const got = await morePage(limit, gen);
        if (got < 0) { if (gen === S.gen) S.failedAt = Date.now(); break; }  // not when superseded
        left -= limit;
      }
    } finally {
      if (gen === S.gen) { S.loading = null; KQ.arrived(S.items.length, S.done); showWaiting(); }
    }
  })();
  return S.loading;
}
async function morePage(limit, gen) {
  try {
    const first = S.items.length === 0;
    // Ranking more results changes the saved search: a POST, like every change.
    const url = `${API}/c/${encodeURIComponent(S.c)}/searches/${q(S.sid)}/results`;
    const r = await (await send("POST", url, {offset: S.items.length, limit: limit})).json();
    if (gen !== S.gen) return -1;  // another search was opened meanwhile
    S.loadError = null;
    if (first && !typedSinceAsked(true)) {  // fill the form with the search shown, but never overwrite later typing
      const rq = r.request;
      $("query").value = rq.text; $("taxon").value = rq.filters.taxa.join(",");
      $("from").value = rq.filters.date_from || ""; $("to").value = rq.filters.date_to || "";
      $("bbox").value = rq.filters.bbox ? rq.filters.bbox.join(",") : ""; $("like").value = rq.like.join(",");
      $("under").value = (rq.filters.under || []).join(",");
    }
    if (first) showRound(r.round || 0, r.round_model || "", r.round_relevant || 0, r.round_not_relevant || 0);
    for (const it of r.results) {
      keepLocal(it);
      S.items.push(it);
      $("list").appendChild(render(it, S.items.length - 1));
    }
    if (r.results.length < limit) S.done = true;
    rememberShown();
    status(`${S.items.length} results shown` + (S.done ? " (end of ranking)" : ""));
    return r.results.length;
  } catch (e) {
    if (e.network) offline();
    if (gen !== S.gen) return -1;  // a search no longer shown: its error is not this one's
    S.loadError = {message: e.message, retry: retryable(e)};
    status(e.message, true);
    return -1;
  }
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

function num(x, digits) { return typeof x === "number" ? x.toFixed(digits) : ""; }
function render(it, i) {
  const url = `${API}/c/${encodeURIComponent(S.c)}/images/${encodeURIComponent(it.image_id)}?size=256`;
  const tap = (mark, title, label) => h("button", {type: "button", "data-mark": mark, title: title}, label);
  const d = h("div", {class: "result", id: "r" + i, "data-image-id": it.image_id},
    h("img", {loading: "lazy", src: url, alt: `image ${it.image_id}`}),
    h("div", {class: "meta"},
      h("b", null, `#${it.rank}`), ` score ${num(it.score, 4)} · image ${it.image_id}`,
      it.round ? [" · ", h("span", {class: "round", title: `ranked by what the marks taught (round ${it.round})`}, `round ${it.round}`)] : null,
      h("br"), `${it.taxon || ""} ${String(it.date || "").slice(0, 10)} `,
      it.lat == null ? "" : `· ${num(it.lat, 3)}, ${num(it.lon, 3)}`, h("br"),
      h("span", {class: "path"}, it.path || ""), h("br"),
      "mine: ", h("span", {class: "mark mine"}), " ", h("span", {class: "state"}), " ", h("span", {class: "others"}),
      h("div", {class: "tap"},
        tap("relevant", "relevant (1 or y)", "\u2713 relevant"),
        tap("not_relevant", "not relevant (2 or n)", "\u2717 not"),
        tap("unsure", "unsure (3 or u)", "? unsure"))));
  d.onclick = (ev) => { if (!ev.target.closest("button")) KQ.push({op: "goto", i}); };
  d.querySelectorAll(".tap button").forEach(b => b.addEventListener("click", () => {
    if (needWho()) KQ.push({op: "markAt", i, value: b.dataset.mark});
  }));
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
  d.querySelector(".others").replaceChildren(...Object.entries(it.marks).filter(([w]) => w !== who())
    .map(([w, v]) => h("span", {class: "m-" + (LABEL[v] ? v : "unknown")}, `${w}: ${LABEL[v] || v}`)));
}
// The cursor: shown on result i (the key queue decides where it is).
function select(i) {
  if (i < 0 || i >= S.items.length) return;
  for (const old of document.querySelectorAll(".result.current")) old.classList.remove("current");
  const d = $("r" + i); d.classList.add("current");
  d.scrollIntoView({block: "nearest"});
  rememberShown();
  if (i >= S.items.length - 3) more();
}
// Mark item i now (locally at once, on the server through the queue); returns its previous mark.
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
function needWho() {
  if (who()) return true;
  status("type your name first (top left)", true); $("who").focus();
  return false;
}
const KQ = new KeyQueue({
  mark(i, value) {
    const prev = apply(i, value);
    status(`image ${S.items[i].image_id}: ${LABEL[value] || "cleared"}`);
    return prev;
  },
  select: select,
  more() { more(); },
  undone(u) {
    if (!u) status("nothing to undo");
    else status(`undone: image ${S.items[u.i].image_id} is ${LABEL[u.prev] || "unmarked"} again`);
  },
});
// Keys waiting for results that are still loading: said in the status line.
// A failed load is said too (the keys stay queued and apply once results come), with what
// happens next: another try by itself, or none until the m key.
function showWaiting() {
  if (!KQ.waiting()) return;
  const keys = `${KQ.queue.length} key${KQ.queue.length > 1 ? "s" : ""} waiting for`;
  if (KQ.held) { status(`${keys} the ranking round…`); return; }
  const n = `${keys} more results`;
  const e = S.loadError;
  if (!e) { status(n + "…"); return; }
  status(`could not load more results: ${e.message}; ${n}, ` +
    (e.retry ? "trying again…" : "press m to try again"), true);
}
// Relevance feedback: re-rank what nobody marked yet from the marks (a new ranking round).
// Results up to the cursor (and every marked one) stay; the rest is replaced.
async function learn() {
  if (!S.sid) { status("run or open a search first", true); return; }
  if (KQ.waiting() || S.loading) { status("wait: results are still loading", true); return; }
  if (Q.pending.length) { status(`wait: ${Q.pending.length} mark(s) still being saved`, true); pump(); return; }
  const c = S.c, sid = S.sid, url = `${API}/c/${encodeURIComponent(c)}/searches/${q(sid)}/learn`;
  const gen = S.gen;
  // The round replaces the results after the cursor: no page of more results may load
  // meanwhile (its offset would be the old list's, its results appended to the new one), so
  // the round holds the loading slot; more() waits for it. Keys pressed meanwhile wait for
  // it too, and apply to the results it shows (a mark on a result it replaces would be
  // refused: the server no longer ranks that image).
  KQ.hold();
  const job = Promise.resolve().then(async () => {
    let r = null, err = null;
    try {
      r = await (await send("POST", url, {shown: KQ.cur + 1, model: $("fbmodel").value, who: who() || null, depth: PAGE})).json();
    } catch (e) {
      if (e.network) offline();
      err = e;
      // No answer, or a server error: the server may have made the round all the same (its
      // answer was lost). The page asks which round the search is at before it goes on.
      if (retryable(e) && gen === S.gen) {
        status(`ranking round: ${e.message}; asking the server whether it was made…`, true);
        r = await roundMade(gen);
      }
    }
    if (gen !== S.gen) {  // another search was opened meanwhile: the round is not for it
      // unless it is this search again (Back, then Forward), read before the server made the
      // round: it shows the results the round replaced, so it is read again.
      if (r && S.c === c && S.sid === sid && S.round < r.round) openSearch(c, sid);
      return;
    }
    if (S.loading === job) S.loading = null;  // before the key queue asks for more
    if (r) { showNewRound(r); return; }
    // Not made: keys that waited for the round go on, on the results shown (they may load
    // more now); then the page says the round failed.
    KQ.arrived(S.items.length, S.done);
    status(`ranking round not made: ${err.message} (press l to try again)`, true);
  });
  S.loading = job;
  return job;
}
// The round the server made: the results after its after_rank are replaced by its own.
function showNewRound(r) {
  const keep = S.items.filter(it => it.rank <= r.after_rank).length;
  // The round keeps every result down to after_rank: the deepest mark, maybe another
  // person's on a result this page has not loaded yet. Those come first, loaded as more
  // results (the server's list from `keep` on), then the new ones.
  const whole = (keep ? S.items[keep - 1].rank : 0) === r.after_rank;
  for (let i = keep; i < S.items.length; i++) { const d = $("r" + i); if (d) d.remove(); }
  S.items.length = keep;
  if (whole) for (const it of r.results) { keepLocal(it); S.items.push(it); $("list").appendChild(render(it, S.items.length - 1)); }
  S.done = whole && r.results.length < PAGE;
  showRound(r.round, r.model, r.n_relevant, r.n_not_relevant);
  status(`ranking round ${r.round}: results after #${r.after_rank} re-ranked from ${r.n_relevant} relevant and ${r.n_not_relevant} not relevant marks`);
  KQ.relearn(keep, S.items.length, S.done);
  if (!whole) more();
}
// Whether the server made a ranking round of the search shown after the page's (asked until
// it answers, every RETRY_MS): the round, in learn's answer's form, or null (not made, a
// refusal, or another search opened meanwhile). The round's results are those of its number.
async function roundMade(gen) {
  const base = `${API}/c/${encodeURIComponent(S.c)}/searches/${q(S.sid)}`;
  for (;;) {
    try {
      const p = await (await call(`${base}/results?offset=0&limit=${Math.min(S.items.length + PAGE, 500)}`)).json();
      if (gen !== S.gen || !((p.round || 0) > S.round)) return null;
      const i = p.results.findIndex(it => it.round === p.round);
      const last = p.results.length ? p.results[p.results.length - 1].rank : 0;
      return {round: p.round, model: p.round_model, n_relevant: p.round_relevant, n_not_relevant: p.round_not_relevant,
              after_rank: i >= 0 ? p.results[i].rank - 1 : last, results: i >= 0 ? p.results.slice(i, i + PAGE) : []};
    } catch (e) {
      if (e.network) offline();
      if (!retryable(e) || gen !== S.gen) return null;
    }
    await new Promise(ok => setTimeout(ok, RETRY_MS));
    if (gen !== S.gen) return null;
  }
}
function showRound(n, model, pos, neg) {
  S.round = n || 0;
  $("round").textContent = n ? `ranking: round ${n} (${model}, ${pos} relevant / ${neg} not)` : "ranking: first search";
}

// Marks made elsewhere (another tab, another person): from the channel at once, and from the
// server when the page becomes visible again. Marks still queued here are never overwritten.
// Messages can arrive out of the server's order (another tab's answer came before ours, its
// message after), so once another tab marks this search, the marks are read again from the
// server a moment after the last mark of either tab: every tab ends showing what is saved.
function remoteMark(msg) {
  if (msg.c !== S.c || msg.sid !== S.sid) return;
  S.shared = true;
  laterResync();
  const i = S.items.findIndex(it => it.image_id === msg.image_id);
  if (i < 0) return;
  const it = S.items[i];
  if (msg.who === who() && stateOf(it) === "pending") return;
  if (msg.mark === "clear") delete it.marks[msg.who]; else it.marks[msg.who] = msg.mark;
  paint($("r" + i), it);
  refreshSide();
}
function laterResync() { clearTimeout(S.resyncTimer); S.resyncTimer = setTimeout(resync, 300); }
async function resync() {
  if (!S.sid || !S.items.length) return;
  const startN = Q.n;  // marks made after this are newer than anything the answer can hold
  const my = ++S.syncSeq;  // an older read answering late must not undo a newer one
  const gen = S.gen, base = `${API}/c/${encodeURIComponent(S.c)}/searches/${q(S.sid)}`;
  try {
    for (let off = 0; off < S.items.length; off += 500) {
      const url = `${base}/results?offset=${off}&limit=${Math.min(500, S.items.length - off)}`;
      const r = await (await call(url)).json();
      if (my !== S.syncSeq || gen !== S.gen) return;  // marks belong to a search: not another's
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

// The width a chart is drawn at: its box's, so its text is drawn at its own size (never shrunk).
function chartWidth(box) { return Math.max(280, Math.min(960, Math.floor(box.clientWidth || 360))); }
async function refreshSide() {
  if (!S.sid) return;
  const base = `${API}/c/${encodeURIComponent(S.c)}/searches/${q(S.sid)}`;
  const w = $("mine").checked ? "&who=" + encodeURIComponent(who()) : "";
  const by = encodeURIComponent($("by").value);
  const my = ++S.seq;  // an older refresh finishing late must not overwrite a newer one
  try {
    const s = await (await call(`${base}/summary?x=1${w}`)).json();
    const svg = await (await call(`${base}/trend.svg?by=${by}&width=${chartWidth($("trend"))}${w}`)).text();
    const eff = await (await call(`${base}/efficiency.svg?width=${chartWidth($("effsvg"))}${w}`)).text();
    if (my !== S.seq) return;
    const e = s.efficiency, a = s.agreement;
    const people = [];
    for (const [p, c] of Object.entries(a.people)) {
      if (people.length) people.push(h("br"));
      people.push(`${p}: ${c.relevant} relevant, ${c.not_relevant} not, ${c.unsure} unsure`);
    }
    $("summary").replaceChildren(
      h("h3", null, "Survey effort"),
      h("p", {id: "effort"}, `${e.inspected} images inspected (down to rank ${e.deepest_rank}), `,
        h("b", null, String(e.positives)), " positives found",
        e.inspected ? ` (${(100 * e.positives / e.inspected).toFixed(1)}%)` : ""),
      h("h3", null, "People"), h("p", null, people),
      h("p", null, `${a.images_marked_by_several} images marked by several people` +
        (a.agreement == null ? "" : `, all agree on ${(100 * a.agreement).toFixed(0)}%`)));
    svgInto($("trend"), svg);
    svgInto($("effsvg"), eff);
    $("exports").replaceChildren("Export marks: ", h("a", {id: "csv", href: `${base}/export.csv?x=1${w}`}, "CSV"),
      " · ", h("a", {href: `${base}/export.parquet?x=1${w}`}, "parquet"),
      " · ", h("a", {id: "inquire-search", href: `${base}/export/inquire-search?x=1${w}`}, "INQUIRE-Search CSV"),
      " · ", h("a", {id: "dwca", href: `${base}/export/dwca?x=1${w}`}, "Darwin Core (GBIF)"));
  } catch (e) { if (e.network) offline(); else if (my === S.seq) status(e.message, true); }
}

document.addEventListener("keydown", (ev) => {
  const tag = ev.target.tagName;
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  // No search shown (none sent yet, or Back to the page as it was opened): a move or a mark
  // has no result to apply to, and no results will come for it (a search opened next
  // starts with no keys waiting).
  if (!S.sid && (k in KEYS || ["j", "k", "ArrowDown", "ArrowUp", "z", "m"].includes(k))) {
    status("no search shown: send a search or pick a saved one", true); ev.preventDefault(); return;
  }
  if (k === "j" || k === "ArrowDown") { KQ.push({op: "down"}); ev.preventDefault(); }
  else if (k === "k" || k === "ArrowUp") { KQ.push({op: "up"}); ev.preventDefault(); }
  else if (k === "m") { more(undefined, true); }
  else if (k === "z") { KQ.push({op: "undo"}); ev.preventDefault(); }
  else if (k === "r") { retryFailed(); ev.preventDefault(); }
  else if (k === "l") { learn(); ev.preventDefault(); }
  else if (k in KEYS) { if (needWho()) KQ.push({op: "mark", value: KEYS[k]}); ev.preventDefault(); }
  else return;
  showWaiting();
});
$("search").addEventListener("submit", runSearch);
$("retry").addEventListener("click", retryFailed);
$("learn").addEventListener("click", learn);
$("collection").addEventListener("change", () => loadSaved().catch(e => status(e.message, true)));
$("saved").addEventListener("change", () => {
  const sid = $("saved").value, c = $("collection").value;
  if (!sid) return;
  ask();
  setHash(c, sid);
  openSearch(c, sid);
});
$("by").addEventListener("change", refreshSide);
$("mine").addEventListener("change", refreshSide);
$("who").addEventListener("change", () => { setWho(who()); S.items.forEach((it, i) => paint($("r" + i), it)); refreshSide(); });
document.addEventListener("input", (ev) => {
  S.edits++;
  if (ev.target && ev.target.closest && ev.target.closest("#search")) S.formEdits++;
}, true);
if (channel) channel.onmessage = (ev) => remoteMark(ev.data);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") resync(); });
window.addEventListener("focus", resync);
window.addEventListener("online", () => { if (Q.offline) probe(); });
// A link to another search pasted into this tab's address bar changes only the fragment
// (no reload): open the search it names.
window.addEventListener("hashchange", () => {
  const hs = readHash();
  if (!hs.c || !hs.s) {  // Back to the page as it was opened, with no search: none is shown
    if (S.sid) { ask(); closeSearch(null, null); }
    return;
  }
  if (hs.c === S.c && hs.s === S.sid) return;
  ask();
  const was = $("collection").value;
  chooseCollection(hs.c);
  openSearch(hs.c, hs.s);
  // Back / Forward / a link to a search of another collection: list that collection's saved
  // searches (a search picked from the list is one of the collection chosen).
  if ($("collection").value !== was) loadSaved().catch(e => status(e.message, true));
});
// Charts are drawn at their box's width: draw them again when the window changes size.
window.addEventListener("resize", () => { clearTimeout(S.resized); S.resized = setTimeout(refreshSide, 250); });

// The search the link names and the lists. Run at load and again when the server comes
// back after the first requests got no answer. The linked search opens at once (it needs no
// list; keys pressed meanwhile wait for its results), and only while no other search was asked
// for (a search sent while the lists load is the one shown).
async function start() {
  const hs = readHash();
  if (hs.c && hs.s && !S.asked) { ask(); openSearch(hs.c, hs.s); }
  // No list (no answer, or a server error): asked for again later (probe(), then online()).
  try { await collectionsReady(); } catch (e) { if (retryable(e)) offline(e); status(e.message, true); return; }
  const now = readHash();  // a search sent or a link pasted meanwhile names its collection
  if (now.c) chooseCollection(now.c);  // a search sent meanwhile runs in it too (none was chosen)
  await loadSaved().catch(e => status(e.message, true));
}
// A name typed before this script ran (a slow server shows the form first) is kept.
if (!who()) $("who").value = localStorage.getItem("inquire_who") || "";
$("go").disabled = false;  // the form is sent by runSearch only: before it, Enter does nothing
restore();
showRetry();
if (Q.pending.length) pump();
start();
