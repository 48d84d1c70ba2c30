// tollgate dashboard: polls /api/stats once a second and draws it. Every value from the server is
// put on the page as text (textContent), never as markup: tenant, client and action ids are
// chosen by clients.
"use strict";

const TOKEN_KEY = "tollgate-admin-token";
const OUTCOMES = ["allowed", "denied", "shadow_denied", "shed", "fail_open", "error"];
const SVG = "http://www.w3.org/2000/svg";

let sortKey = "decisions_per_second";
let sortAsc = false;
let lastStats = null;
let configVersion = null;
let configRows = [];
let stopped = false;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// The token comes from a #token= fragment (never sent to the server by the browser) or the
// login form, and lives in this tab's sessionStorage only.
function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=(.*)$/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(path) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (resp.status === 401) {
    const err = new Error("unauthorized");
    err.unauthorized = true;
    throw err;
  }
  if (!resp.ok) throw new Error(path + " answered " + resp.status);
  return resp.json();
}

function showLogin(message) {
  stopped = true;
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "admin token needed";
  $("token").focus();
}

function fmt(n, digits) {
  if (n === null || n === undefined) return "–";
  if (typeof digits === "number") return n.toFixed(digits);
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function pct(x) { return (100 * x).toFixed(1) + "%"; }

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  return m + "m " + (s % 60) + "s";
}

// A small line chart of one or more series sharing a y scale.
function sparkline(series, colors, cls) {
  const svg = document.createElementNS(SVG, "svg");
  const n = Math.max(2, ...series.map(s => s.length));
  const max = Math.max(1, ...series.flat().filter(v => v !== null));
  svg.setAttribute("viewBox", `0 0 ${n - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (cls) svg.setAttribute("class", cls);
  series.forEach((s, i) => {
    const pts = s.map((v, x) => `${x + (n - s.length)},${100 - 96 * (v || 0) / max}`).join(" ");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[i]);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  });
  return svg;
}

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim() || "#333";
}

function card(id, label, value, sub, chart) {
  const c = el("div", { class: "card", id: "card-" + id },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-field": id }, value));
  if (sub) c.append(el("div", { class: "sub" }, sub));
  if (chart) c.append(chart);
  return c;
}

function renderService(s) {
  const svc = s.service, hist = s.history;
  const cards = [];
  for (const o of OUTCOMES) {
    cards.push(card(o, o.replace("_", " ") + " /s", fmt(svc.last_second[o]),
      "total " + fmt(svc.totals[o]),
      sparkline([hist.map(h => h.decisions[o])], [color(o)])));
  }
  cards.push(card("latency", "decision latency p50 / p99",
    fmt(svc.latency_p50_ms, 3) + " / " + fmt(svc.latency_p99_ms, 3) + " ms", "last 10 s, queueing included",
    sparkline([hist.map(h => h.latency_p50_ms), hist.map(h => h.latency_p99_ms)], [color("fail_open"), color("denied")])));
  cards.push(card("in_flight", "in flight / max", svc.in_flight + " / " + svc.max_global_concurrent_requests,
    "max_global_concurrent_requests",
    sparkline([hist.map(h => h.in_flight), hist.map(h => h.max_global_concurrent_requests)], [color("fail_open"), "#999"])));
  cards.push(card("queued", "queued", fmt(svc.queued), "waiting in tenant queues",
    sparkline([hist.map(h => h.queued)], [color("shed")])));
  cards.push(card("store", "store", svc.store_kind + (svc.store_healthy ? " · healthy" : " · UNREACHABLE"),
    svc.store_kind === "redis" ? (svc.store_healthy ? "circuit breaker closed" : "circuit breaker open") : "in-process"));
  cards.push(card("config_version", "config version", String(svc.config_version), "uptime " + duration(svc.uptime_seconds)));
  $("service").replaceChildren(...cards);
  const store = svc.store_healthy ? el("span", { class: "good" }, svc.store_kind + " healthy")
    : el("span", { class: "bad" }, svc.store_kind + " unreachable");
  $("status").replaceChildren(store, " · config v" + svc.config_version + " · up " + duration(svc.uptime_seconds)
    + " · updated " + new Date().toLocaleTimeString());
}

function tenantValue(t, key) {
  switch (key) {
    case "tenant": return t.other ? "\uffff" : t.tenant;
    case "allowed": case "denied": case "shed": return t.totals[key];
    default: return t[key];
  }
}

function renderTenants(s) {
  const rows = s.tenants.slice().sort((a, b) => {
    const x = tenantValue(a, sortKey), y = tenantValue(b, sortKey);
    const c = x < y ? -1 : x > y ? 1 : 0;
    return sortAsc ? c : -c;
  });
  const body = rows.map(t => {
    const name = t.other ? "(other tenants)" : t.tenant;
    const tr = el("tr", { "data-tenant": name });
    const td = (field, value, cls) => el("td", { "data-field": field, class: cls || "num" }, value);
    const bar = el("div", { class: "share", title: "received " + pct(t.admitted_share) + ", fair " + pct(t.fair_share) });
    const got = el("div", { class: "got" });
    got.style.width = (100 * Math.min(1, t.admitted_share)) + "%";
    const fair = el("div", { class: "fair" });
    fair.style.left = (100 * Math.min(1, t.fair_share)) + "%";
    bar.append(got, fair);
    const over = t.admitted_share > t.fair_share + 0.05;
    const shareCell = el("td", { "data-field": "admitted_share" },
      el("div", { class: "share-cell" }, bar,
        el("span", { class: "share-text" + (over ? " over" : "") },
          el("span", { "data-field": "admitted_share_text" }, pct(t.admitted_share)), " of slots · fair ",
          el("span", { "data-field": "fair_share_text" }, pct(t.fair_share)))));
    tr.append(
      el("td", { "data-field": "tenant", class: "id" + (t.other ? " other" : ""), title: name }, name),
      td("decisions_per_second", fmt(t.decisions_per_second, 1)),
      td("allowed", String(t.totals.allowed)),
      td("denied", String(t.totals.denied)),
      td("shed", String(t.totals.shed)),
      td("denied_share", pct(t.denied_share)),
      td("queued", String(t.queued)),
      td("weight", String(t.weight)),
      shareCell,
      el("td", {}, sparkline([t.history], [color("fail_open")])));
    return tr;
  });
  if (!body.length) body.push(el("tr", {}, el("td", { colspan: "10" }, "no decisions yet")));
  $("tenants").querySelector("tbody").replaceChildren(...body);
  for (const th of document.querySelectorAll("#tenants th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === sortKey);
    th.classList.toggle("asc", th.dataset.sort === sortKey && sortAsc);
  }
}

function renderHitters(table, list, s) {
  const rows = list.map(h => el("tr", { "data-key": h.tenant_id + "/" + h.client_id + "/" + h.action_type },
    el("td", { class: "id", title: h.tenant_id }, h.tenant_id),
    el("td", { class: "id", title: h.client_id }, h.client_id),
    el("td", { class: "id", title: h.action_type }, h.action_type),
    el("td", { class: "num", "data-field": "count", title: h.error ? "may overcount by " + h.error : "exact" },
      String(h.count)),
    el("td", { class: "num" }, h.max_requests === null ? "–"
      : h.max_requests + " / " + fmt(h.window_duration_seconds) + " s")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5" }, "none")));
  $(table).querySelector("tbody").replaceChildren(...rows);
}

function flatten(prefix, v, out) {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    if ("max_requests" in v && "window_duration_seconds" in v) {
      const extra = Object.entries(v).filter(([k]) => k !== "max_requests" && k !== "window_duration_seconds")
        .map(([k, x]) => k + "=" + JSON.stringify(x)).join(" ");
      out.push([prefix, v.max_requests + " per " + v.window_duration_seconds + " s" + (extra ? " " + extra : "")]);
      return out;
    }
    if (prefix.endsWith(".api_keys")) {
      out.push([prefix, Object.keys(v).length + " key(s)"]);
      return out;
    }
    for (const [k, x] of Object.entries(v)) flatten(prefix ? prefix + "." + k : k, x, out);
  } else {
    out.push([prefix, JSON.stringify(v)]);
  }
  return out;
}

function renderConfig() {
  const q = $("config-filter").value.trim().toLowerCase();
  const rows = configRows.filter(([k, v]) => !q || k.toLowerCase().includes(q) || v.toLowerCase().includes(q));
  const shown = rows.slice(0, 500).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)));
  if (rows.length > 500) shown.push(el("tr", {}, el("td", { colspan: "2" }, (rows.length - 500) + " more; narrow the filter")));
  $("config").querySelector("tbody").replaceChildren(...shown);
}

async function refreshConfig(version) {
  if (version === configVersion) return;
  const doc = await api("/api/config");
  configVersion = version;
  configRows = flatten("", doc, []).filter(([k]) => k !== "version");
  $("config-version").textContent = "version " + version;
  renderConfig();
}

function render(s) {
  lastStats = s;
  renderService(s);
  renderTenants(s);
  $("hh-window").textContent = "last " + s.heavy_hitters.window_seconds + " s";
  renderHitters("hh-requests", s.heavy_hitters.by_requests, s);
  renderHitters("hh-denials", s.heavy_hitters.by_denials, s);
}

async function poll() {
  if (stopped) return;
  try {
    const s = await api("/api/stats");
    render(s);
    document.body.dataset.loaded = "true";
    await refreshConfig(s.service.config_version).catch(() => {});
  } catch (e) {
    if (e.unauthorized) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? "that token was refused" : "");
      return;
    }
    $("status").textContent = "cannot reach the service: " + e.message;
  }
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  for (const th of document.querySelectorAll("#tenants th[data-sort]")) {
    th.addEventListener("click", () => {
      if (sortKey === th.dataset.sort) sortAsc = !sortAsc;
      else { sortKey = th.dataset.sort; sortAsc = sortKey === "tenant"; }
      if (lastStats) renderTenants(lastStats);
    });
  }
  $("config-filter").addEventListener("input", renderConfig);
  $("login").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    $("main").hidden = false;
    stopped = false;
    poll();
  });
  poll();
});
