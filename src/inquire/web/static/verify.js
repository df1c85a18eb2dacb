"use strict";
const API = window.location.pathname.replace(/\/$/, "") + "/api";
const S = {c: null, sid: null, items: [], cur: -1, done: false, loading: false, seq: 0};
const $ = (id) => document.getElementById(id);
const LABEL = {relevant: "relevant", not_relevant: "not relevant", unsure: "unsure"};
const KEYS = {"1": "relevant", "y": "relevant", "2": "not_relevant", "n": "not_relevant",
              "3": "unsure", "u": "unsure", "0": "clear", "x": "clear"};

function who() { return $("who").value.trim(); }
function setWho(v) {
  localStorage.setItem("inquire_who", v);
  document.cookie = "inquire_who=" + encodeURIComponent(v) + ";path=/;max-age=31536000;SameSite=Lax";
}
function status(msg, err) { const s = $("status"); s.textContent = msg; s.className = err ? "err" : ""; }
async function call(url, opts) {
  opts = opts || {};
  if (opts.method && opts.method !== "GET") {  // changes carry the page's CSRF token
    const m = document.querySelector('meta[name="csrf-token"]');
    opts.headers = Object.assign({}, opts.headers, {"X-CSRF-Token": m ? m.content : ""});
  }
  const r = await fetch(url, opts);
  if (!r.ok) { let d = r.statusText; try { d = (await r.json()).detail; } catch (e) {} throw new Error(d); }
  return r;
}
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c])); }

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
    const r = await (await call(`${API}/c/${encodeURIComponent(S.c)}/searches`, {method: "POST",
      headers: {"content-type": "application/json"}, body: JSON.stringify(body)})).json();
    location.hash = `c=${encodeURIComponent(S.c)}&s=${r.search_id}`;
    await openSearch(S.c, r.search_id);
    await loadSaved();
  } catch (e) { status(e.message, true); }
}

async function openSearch(c, sid) {
  S.c = c; S.sid = sid; S.items = []; S.cur = -1; S.done = false;
  $("list").innerHTML = "";
  await more();
  if (S.items.length) select(0);
  refreshSide();
}

async function more() {
  if (S.loading || S.done || !S.sid) return;
  S.loading = true;
  try {
    const url = `${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}/results`;
    const r = await (await call(url, {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({offset: S.items.length, limit: 24})})).json();
    const q = r.request;
    $("query").value = q.text; $("taxon").value = q.filters.taxa.join(",");
    $("from").value = q.filters.date_from || ""; $("to").value = q.filters.date_to || "";
    $("bbox").value = q.filters.bbox ? q.filters.bbox.join(",") : ""; $("like").value = q.like.join(",");
    $("under").value = (q.filters.under || []).join(",");
    for (const it of r.results) { S.items.push(it); $("list").appendChild(render(it, S.items.length - 1)); }
    if (r.results.length < 24) S.done = true;
    status(`${S.items.length} results shown` + (S.done ? " (end of ranking)" : ""));
  } catch (e) { status(e.message, true); }
  S.loading = false;
}

function render(it, i) {
  const d = document.createElement("div");
  d.className = "result"; d.id = "r" + i; d.dataset.imageId = it.image_id;
  d.onclick = () => select(i);
  d.innerHTML = `<img loading="lazy" src="${API}/c/${encodeURIComponent(S.c)}/images/${it.image_id}?size=256" alt="">
  <div class="meta"><b>#${it.rank}</b> score ${it.score.toFixed(4)} · image ${it.image_id}<br>
  ${esc(it.taxon || "")} ${esc((it.date || "").slice(0, 10))}
  ${it.lat == null ? "" : "· " + it.lat.toFixed(3) + ", " + it.lon.toFixed(3)}<br>
  <span class="path">${esc(it.path || "")}</span><br>
  mine: <span class="mark mine"></span> <span class="others"></span></div>`;
  paint(d, it);
  return d;
}
function paint(d, it) {
  const m = it.marks[who()];
  const mine = d.querySelector(".mine");
  mine.textContent = m ? LABEL[m] : "—"; mine.className = "mark mine" + (m ? " m-" + m : "");
  d.dataset.mark = m || "";
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
async function mark(value) {
  if (S.cur < 0) return;
  if (!who()) { status("type your name first (top left)", true); $("who").focus(); return; }
  const it = S.items[S.cur], i = S.cur;
  try {
    await call(`${API}/c/${encodeURIComponent(S.c)}/searches/${S.sid}/marks`, {method: "PUT",
      headers: {"content-type": "application/json"},
      body: JSON.stringify({image_id: it.image_id, who: who(), mark: value})});
    if (value === "clear") delete it.marks[who()]; else it.marks[who()] = value;
    paint($("r" + i), it);
    status(`saved: image ${it.image_id} ${value}`);
    select(i + 1);
    refreshSide();
  } catch (e) { status(e.message, true); }
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
      <a href="${base}/export.parquet?x=1${w}">parquet</a>`;
  } catch (e) { status(e.message, true); }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === "j" || k === "ArrowDown") { select(S.cur + 1); ev.preventDefault(); }
  else if (k === "k" || k === "ArrowUp") { select(S.cur - 1); ev.preventDefault(); }
  else if (k === "m") { more(); }
  else if (k in KEYS) { mark(KEYS[k]); ev.preventDefault(); }
});
$("search").addEventListener("submit", runSearch);
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

(async () => {
  $("who").value = localStorage.getItem("inquire_who") || "";
  await loadCollections();
  const h = readHash();
  if (h.c) $("collection").value = h.c;
  await loadSaved().catch(e => status(e.message, true));
  if (h.c && h.s) await openSearch(h.c, h.s);
})();
