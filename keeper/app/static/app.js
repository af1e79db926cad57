// The status page: polls the admin views every second and renders three tables.
// Vanilla JS, no build step. Cells are set with textContent, never innerHTML, so an account id
// or a venue's rejection reason can never inject markup.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;

const VIEWS = [
  {
    url: "/at-risk?limit=50", table: "at-risk", empty: "no bucket at risk",
    key: (r) => r.account,
    cells: (r) => [r.account, r.bucket, fmt(r.health), fmt(r.equity), fmt(r.requirement),
                   r.liquidatable ? "yes" : "no"],
    rowClass: (r) => (r.liquidatable ? "bad" : Number(r.health) < 1.1 ? "warn" : ""),
  },
  {
    url: "/liquidations/recent?limit=20", table: "liquidations", empty: "no liquidation yet",
    key: (r) => r.intent_id,
    cells: (r) => [r.intent_id, r.account, r.bucket, r.market, fmt(r.size), r.outcome, r.log_pos],
    rowClass: (r) => (r.outcome === "rejected" || r.outcome === "expired" ? "warn" : ""),
  },
  {
    url: "/chain", table: "chain", empty: "no chain venue",
    key: (r) => r.what,
    cells: (r) => [r.what, r.value],
    rowClass: (r) => (String(r.value).startsWith("unreachable") ? "bad" : ""),
  },
  {
    url: "/feeds", table: "feeds", empty: "no feed",
    key: (r) => r.symbol,
    cells: (r) => [r.symbol, fmt(r.price), fmt(r.age_s), r.state],
    rowClass: (r) => (r.state === "ok" ? "" : "bad"),
  },
];

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
  return String(v);
}

function render(view, rows) {
  const tbody = document.querySelector(`#${view.table} tbody`);
  const ncols = document.querySelectorAll(`#${view.table} thead th`).length;
  const frag = document.createDocumentFragment();
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = ncols;
    td.textContent = view.empty;
    tr.appendChild(td);
    frag.appendChild(tr);
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = fmt(view.key(r));
    const cls = view.rowClass(r);
    if (cls) tr.className = cls;
    view.cells(r).forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = fmt(c);
      if (document.querySelectorAll(`#${view.table} thead th`)[i].classList.contains("num")) {
        td.className = "num";
      }
      tr.appendChild(td);
    });
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
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
  const status = document.getElementById("status");
  const results = await Promise.allSettled(VIEWS.map((v) => fetchJson(v.url)));
  const errors = [];
  results.forEach((res, i) => {
    if (res.status === "fulfilled") render(VIEWS[i], res.value);
    else errors.push(String(res.reason && res.reason.message ? res.reason.message : res.reason));
  });
  status.textContent = errors.length ? `error: ${errors.join("; ")}` : "live";
  status.className = errors.length ? "status bad" : "status ok";
  document.getElementById("updated").textContent = `updated ${new Date().toISOString()}`;
}

async function loop() {
  await poll();
  setTimeout(loop, POLL_MS);
}

loop();
