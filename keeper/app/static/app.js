// The status page: polls the admin views every second. The header leads with what the keeper
// is doing (mode, readiness and why not, log position and lag); the tables follow, numbers
// rounded for people (health to 3 significant digits, money to cents, prices to 8 digits).
// Vanilla JS, no build step. Cells are set with textContent, never innerHTML, so an account id
// or a venue's rejection reason can never inject markup.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const FEW = 10;
const MANY = 100;
let atRiskLimit = FEW;

const nf = (opts) => new Intl.NumberFormat("en-US", opts);
const HEALTH = nf({ maximumSignificantDigits: 3 });
const MONEY = nf({ minimumFractionDigits: 2, maximumFractionDigits: 2 });
const PRICE = nf({ maximumSignificantDigits: 8 });
const AGE = nf({ minimumFractionDigits: 1, maximumFractionDigits: 1 });

function num(v, format) {
  if (v === null || v === undefined || v === "") return "–";
  const n = Number(v);
  return Number.isFinite(n) ? format.format(n) : String(v);
}

function clock(iso) {
  return iso ? String(iso).slice(11, 19) : "–";
}

const VIEWS = [
  {
    url: () => "/liquidations/recent?limit=" + FEW, table: "liquidations", empty: "no liquidation yet",
    key: (r) => r.intent_id,
    cells: (r) => [clock(r.time), r.account, r.bucket, r.market, num(r.size, PRICE), num(r.health, HEALTH),
                   r.outcome, r.log_pos],
    title: (r) => `${r.intent_id} at ${r.time || "?"}`,
    rowClass: (r) => (r.outcome === "rejected" || r.outcome === "expired" ? "warn" : ""),
  },
  {
    url: () => "/at-risk?limit=" + (atRiskLimit + 1), table: "at-risk", empty: "no bucket with a health yet",
    key: (r) => `${r.account}/${r.bucket}`,
    limit: () => atRiskLimit,
    cells: (r) => [r.account, r.bucket, num(r.health, HEALTH), num(r.equity, MONEY), num(r.requirement, MONEY),
                   r.liquidatable ? "yes" : "no"],
    rowClass: (r) => (r.liquidatable ? "bad" : Number(r.health) < 1.1 ? "warn" : ""),
  },
  {
    url: () => "/feeds", table: "feeds", empty: "no price yet",
    key: (r) => r.symbol,
    cells: (r) => [r.symbol, num(r.price, PRICE), num(r.age_s, AGE), r.state],
    rowClass: (r) => (r.state === "ok" || r.state === "fixed" ? "" : "bad"),
  },
  {
    url: () => "/chain", table: "chain", empty: "no chain venue",
    key: (r) => r.what,
    cells: (r) => [r.what, String(r.value)],
    rowClass: (r) => (String(r.value).startsWith("unreachable") ? "bad" : ""),
  },
];

function render(view, rows, empty) {
  const tbody = document.querySelector(`#${view.table} tbody`);
  const heads = document.querySelectorAll(`#${view.table} thead th`);
  const frag = document.createDocumentFragment();
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = heads.length;
    td.textContent = empty || view.empty;
    tr.appendChild(td);
    frag.appendChild(tr);
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = String(view.key(r));
    const cls = view.rowClass(r);
    if (cls) tr.className = cls;
    if (view.title) tr.title = view.title(r);
    view.cells(r).forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c === null || c === undefined ? "–" : String(c);
      if (heads[i] && heads[i].classList.contains("num")) td.className = "num";
      tr.appendChild(td);
    });
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
}

const SHARDS = {
  table: "shards", empty: "no shard",
  key: (r) => r.shard,
  cells: (r) => [r.shard, r.holder, r.token, r.ttl_ms, r.held_s, r.lag_ms, r.position],
  rowClass: (r) => (!r.holder ? "bad" : r.lag_ms > 1000 ? "warn" : ""),
};

function setText(id, text, cls) {
  const el = document.getElementById(id);
  el.textContent = text;
  if (cls !== undefined) el.className = cls;
}

function renderSummary(s) {
  const live = s.mode === "live";
  setText("mode", live ? "LIVE: submits liquidations" : `${String(s.mode).toUpperCase()}: decides and records, submits nothing`,
          live ? "badge live" : "badge paper");
  setText("ready", s.ready ? "ready" : "NOT READY", s.ready ? "badge ok" : "badge bad");
  setText("log", s.log_position ? `${s.log_position}${s.log_last && s.log_last !== s.log_position ? ` (end ${s.log_last})` : ""}` : "empty");
  setText("lag", `${Number(s.lag || 0).toLocaleString("en-US")} entries`, s.lag > 0 ? "warnval" : "");
  const reasons = document.getElementById("reasons");
  const why = (s.reasons || []).slice();
  if (s.paused && s.paused.length) why.unshift(`paused: ${s.paused.join(", ")}`);
  reasons.hidden = !why.length;
  reasons.textContent = why.length ? `why: ${why.join("; ")}` : "";
  const hint = document.getElementById("hint");
  hint.hidden = s.feeds > 0;
  hint.textContent = s.feeds > 0 ? "" : "No price feed is configured: the keeper sees no prices and decides " +
    "nothing. Add [[feeds.sources]] to the config (examples in config/default.toml) and restart keeper run.";
  setText("feeds-note", s.feeds > 0 ? `(stale after ${s.staleness_s} s by the wall clock)` : "(none configured)");
  const sharded = Array.isArray(s.shards);  // the sharded mode (keeper.app.shard_status)
  document.getElementById("shards-section").hidden = !sharded;
  render(SHARDS, sharded ? s.shards : []);  // hidden with one shard, never left "loading…"
  return s;
}

async function fetchJson(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const resp = await fetch(url, { signal: ctl.signal, cache: "no-store" });
    if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
}

async function poll() {
  const urls = ["/summary", ...VIEWS.map((v) => v.url())];
  const results = await Promise.allSettled(urls.map(fetchJson));
  const errors = [];
  let summary = null;
  if (results[0].status === "fulfilled") summary = renderSummary(results[0].value);
  else errors.push(String(results[0].reason && results[0].reason.message || results[0].reason));
  results.slice(1).forEach((res, i) => {
    const view = VIEWS[i];
    if (res.status !== "fulfilled") {
      errors.push(String(res.reason && res.reason.message ? res.reason.message : res.reason));
      return;
    }
    let rows = res.value;
    if (view.limit) {
      const more = document.getElementById("at-risk-more");
      more.hidden = rows.length <= view.limit() && atRiskLimit === FEW;
      more.textContent = atRiskLimit === FEW ? `more… (${MANY})` : `fewer (${FEW})`;
      rows = rows.slice(0, view.limit());
    }
    let empty;
    if (view.table === "feeds" && summary && summary.feeds === 0) empty = "no feed configured";
    if (view.table === "chain") document.getElementById("chain-section").hidden = !rows.length;
    render(view, rows, empty);
  });
  const now = new Date().toISOString().slice(11, 19);
  setText("page", errors.length ? `cannot read the keeper: ${errors.join("; ")}` : `page updated ${now} UTC`,
          errors.length ? "page bad" : "page muted");
}

document.getElementById("at-risk-more").addEventListener("click", (ev) => {
  ev.preventDefault();
  atRiskLimit = atRiskLimit === FEW ? MANY : FEW;
  poll();
});

async function loop() {
  await poll();
  setTimeout(loop, POLL_MS);
}

loop();
