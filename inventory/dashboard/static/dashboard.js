// The DLM dashboard's only script: it fetches the server-rendered fragments with the token,
// sorts and filters tables, sends the action forms to the API and draws the plots as SVG.
// No framework and nothing from the internet: the server serves this file itself.
"use strict";

const TOKEN_KEY = "dlm-token";
const ROLE_RANK = { reader: 0, producer: 1, operator: 2 };
const SVG = "http://www.w3.org/2000/svg";
let role = null; // the signed-in role once known

// ---------------------------------------------------------------- token and requests

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const out = Object.assign({}, extra || {});
  if (token()) out.Authorization = "Bearer " + token();
  return out;
}

// fetch with the token; resolves to {ok, status, text}. A refused request becomes a message
// on the page rather than an exception.
async function call(url, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  let response;
  try {
    response = await fetch(url, opts);
  } catch (err) {
    return { ok: false, status: 0, text: "", message: "the server cannot be reached" };
  }
  const text = await response.text();
  let message = "";
  if (!response.ok) {
    try {
      message = JSON.parse(text).error.message;
    } catch (err) {
      message = response.statusText;
    }
    if (response.status === 401) message = "This needs a token: enter one at the top right. (" + message + ")";
  }
  return { ok: response.ok, status: response.status, text: text, message: message };
}

function notice(text, kind) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = "notice " + (kind || "");
  box.hidden = !text;
}

async function whoami() {
  const who = document.getElementById("who");
  const answer = await call("/dashboard/data/whoami");
  if (!answer.ok) {
    role = null;
    who.textContent = token() ? "token refused" : "no token";
    return;
  }
  const me = JSON.parse(answer.text);
  role = me.role;
  who.textContent = me.open ? "open mode (operator)" : me.name + " (" + me.role + ")";
}

function setupLogin() {
  const form = document.getElementById("login");
  const input = document.getElementById("token");
  const out = document.getElementById("sign-out");
  out.hidden = !token();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    out.hidden = !token();
    await refresh();
  });
  out.addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    out.hidden = true;
    await refresh();
  });
}

// ---------------------------------------------------------------- fragments

async function loadSlot(slot) {
  const url = slot.dataset.query ? slot.dataset.fragment + "?" + slot.dataset.query : slot.dataset.fragment;
  const answer = await call(url);
  if (!answer.ok) {
    slot.innerHTML = "";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = answer.message;
    slot.appendChild(p);
    return;
  }
  slot.innerHTML = answer.text; // built on the server with every value escaped
  await enhance(slot);
}

async function loadAll() {
  const slots = Array.from(document.querySelectorAll("[data-fragment]"));
  // outer slots first: inner ones (a cycle's decisions) arrive with them
  for (const slot of slots) {
    if (!slot.parentElement.closest("[data-fragment]")) await loadSlot(slot);
  }
}

async function refresh() {
  await whoami();
  await loadAll();
  await drawPlots();
}

// Everything a freshly inserted fragment needs: role gating, sorting, filters, forms.
async function enhance(root) {
  // sizes come as data attributes: the page's Content-Security-Policy allows no inline style
  root.querySelectorAll("[data-width]").forEach((node) => (node.style.width = node.dataset.width));
  root.querySelectorAll("[data-left]").forEach((node) => (node.style.left = node.dataset.left));
  root.querySelectorAll("form[data-role]").forEach((form) => {
    const need = ROLE_RANK[form.dataset.role];
    form.hidden = role === null || ROLE_RANK[role] < need;
  });
  root.querySelectorAll("table.sortable").forEach(makeSortable);
  root.querySelectorAll("input[data-filter-for]").forEach(makeFilter);
  root.querySelectorAll("form.action").forEach(makeAction);
  root.querySelectorAll("a[data-authed]").forEach(makeAuthedLink);
  root.querySelectorAll("form.refine").forEach(makeRefine);
  root.querySelectorAll("a[data-more]").forEach((link) => {
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const slot = document.getElementById(link.dataset.more);
      const url = new URL(link.href);
      slot.dataset.query = url.searchParams.toString();
      await loadSlot(slot);
    });
  });
  for (const inner of root.querySelectorAll("[data-fragment]")) await loadSlot(inner);
}

// A form that narrows a slot: its fields become the slot's query (and the page's, so the
// address can be shared).
function makeRefine(form) {
  if (form.dataset.ready) return;
  form.dataset.ready = "1";
  const slot = document.getElementById(form.dataset.slot);
  const asked = new URLSearchParams(location.search);
  const mine = new URLSearchParams();
  for (const element of form.elements) {
    if (element.name && asked.get(element.name)) {
      element.value = asked.get(element.name);
      mine.set(element.name, element.value);
    }
  }
  if (slot && mine.toString()) slot.dataset.query = mine.toString();
  const apply = async () => {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    slot.dataset.query = params.toString();
    history.replaceState(null, "", params.toString() ? "?" + params.toString() : location.pathname);
    await loadSlot(slot);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  form.querySelectorAll("select").forEach((select) => select.addEventListener("change", apply));
}

// ---------------------------------------------------------------- tables

function cellValue(row, index) {
  const cell = row.cells[index];
  if (!cell) return "";
  return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
}

function makeSortable(table) {
  if (table.dataset.ready) return;
  table.dataset.ready = "1";
  table.querySelectorAll("thead th").forEach((th, index) => {
    th.tabIndex = 0;
    th.title = "Sort by this column";
    const sort = () => {
      const body = table.tBodies[0];
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach((other) => other.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, index);
        const y = cellValue(b, index);
        const numeric = x !== "" && y !== "" && !isNaN(Number(x)) && !isNaN(Number(y));
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        sort();
      }
    });
  });
}

function makeFilter(input) {
  const apply = () => {
    const table = document.getElementById(input.dataset.filterFor);
    if (!table || !table.tBodies[0]) return;
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of table.tBodies[0].rows) {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every((word) => text.includes(word));
    }
  };
  input.addEventListener("input", apply);
}

// ---------------------------------------------------------------- actions

function makeAction(form) {
  if (form.dataset.ready) return;
  form.dataset.ready = "1";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    let body = {};
    if (form.dataset.body) {
      body = JSON.parse(form.dataset.body);
    } else {
      for (const [key, value] of new FormData(form)) {
        if (!value) continue;
        body[key] = key === "pin_until" ? new Date(value).toISOString() : value;
      }
    }
    const answer = await call(form.dataset.url, {
      method: form.dataset.method,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (answer.ok) {
      notice("Done: " + form.dataset.method + " " + form.dataset.url, "ok");
      await loadAll();
    } else {
      notice("Refused: " + answer.message, "error");
    }
  });
}

// ---------------------------------------------------------------- authenticated links

// A link to a page of the API (a consistency report in HTML): navigation would not carry the
// token, so the page is fetched with it and opened from memory.
function makeAuthedLink(link) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const opts = { headers: headers() };
    const response = await fetch(link.href, opts);
    if (!response.ok) {
      notice("Refused: " + response.status + " " + response.statusText, "error");
      return;
    }
    const blob = await response.blob();
    window.open(URL.createObjectURL(blob), "_blank");
  });
}

// ---------------------------------------------------------------- plots

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, attrs) {
  const node = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
  node.textContent = content;
  return node;
}

function formatBytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
  let unit = 0;
  while (Math.abs(n) >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return (unit ? n.toPrecision(3) : String(Math.round(n))) + " " + units[unit];
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const W = 720;
const H = 260;
const M = { left: 56, right: 16, top: 12, bottom: 34 };

function frame(box, label) {
  box.textContent = "";
  const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label, class: "chart" }, box);
  return svg;
}

function axisY(svg, max, format) {
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    const y = H - M.bottom - ((H - M.top - M.bottom) * i) / 4;
    el("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid" }, svg);
    text(svg, M.left - 6, y + 4, format(value), { "text-anchor": "end", class: "tick" });
  }
}

function drawOccupancy(box, data) {
  const names = Object.keys(data.occupancy);
  const points = names.flatMap((name) => data.occupancy[name]);
  if (!points.length) {
    box.textContent = "No storage yet.";
    return;
  }
  const svg = frame(box, "Occupancy over time per storage");
  let t0 = Math.min(...points.map((p) => p[0]));
  const t1 = Math.max(...points.map((p) => p[0]));
  if (t1 - t0 < 1) t0 = t1 - 1;
  const seconds = t1 - t0 < 3600 ? 19 : 16; // show seconds on a short span
  const top = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => M.left + ((W - M.left - M.right) * (t - t0)) / (t1 - t0);
  const y = (o) => H - M.bottom - ((H - M.top - M.bottom) * o) / top;
  axisY(svg, top, (v) => Math.round(v * 100) + "%");
  for (const [kind, value] of [["high", data.watermarks && data.watermarks.high], ["low", data.watermarks && data.watermarks.low]]) {
    if (value === null || value === undefined || !data.watermarks) continue;
    el("line", { x1: M.left, x2: W - M.right, y1: y(value), y2: y(value), class: "wm-line " + kind }, svg);
    text(svg, W - M.right - 4, y(value) - 4, kind + " " + Math.round(value * 1000) / 10 + "%", { "text-anchor": "end", class: "tick " + kind });
  }
  for (const when of [t0, t1]) {
    const label = new Date(when * 1000).toISOString().replace("T", " ").slice(0, seconds) + " UTC";
    text(svg, x(when), H - 10, label, { "text-anchor": when === t0 ? "start" : "end", class: "tick" });
  }
  names.forEach((name, index) => {
    const series = data.occupancy[name];
    const colour = COLOURS[index % COLOURS.length];
    const path = series.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    el("path", { d: path, stroke: colour, class: "series", "data-storage": name }, svg);
    for (const p of series) {
      const dot = el("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, fill: colour }, svg);
      const title = el("title", {}, dot);
      title.textContent = name + ": " + (p[1] * 100).toFixed(1) + "% at " + new Date(p[0] * 1000).toISOString();
    }
    text(svg, M.left + 8 + index * 110, M.top + 12, "● " + name, { fill: colour, class: "legend-text" });
  });
}

function drawBytes(box, data) {
  const days = data.bytes_per_day;
  const svg = frame(box, "Bytes copied and deleted per day");
  const top = Math.max(1, ...days.map((d) => Math.max(d.copied, d.deleted)));
  const slotWidth = (W - M.left - M.right) / days.length;
  const y = (v) => H - M.bottom - ((H - M.top - M.bottom) * v) / top;
  axisY(svg, top, formatBytes);
  days.forEach((d, i) => {
    const x0 = M.left + i * slotWidth;
    for (const [k, kind] of [[0, "copied"], [1, "deleted"]]) {
      const value = d[kind];
      if (!value) continue;
      const bar = el("rect", { x: (x0 + 1 + (k * slotWidth) / 2).toFixed(1), y: y(value).toFixed(1), width: Math.max(slotWidth / 2 - 1, 1).toFixed(1), height: (H - M.bottom - y(value)).toFixed(1), class: "bar-" + kind, "data-day": d.day }, svg);
      el("title", {}, bar).textContent = d.day + ": " + formatBytes(value) + " " + kind;
    }
    if (i % 7 === days.length % 7 || i === days.length - 1) text(svg, x0 + slotWidth / 2, H - 10, d.day.slice(5), { "text-anchor": "middle", class: "tick" });
  });
  text(svg, M.left + 8, M.top + 12, "■ copied", { class: "legend-text copied" });
  text(svg, M.left + 90, M.top + 12, "■ deleted", { class: "legend-text deleted" });
}

async function drawPlots() {
  const boxes = document.querySelectorAll("[data-plot]");
  if (!boxes.length) return;
  const answer = await call("/dashboard/data/plots");
  for (const figure of boxes) {
    const canvas = figure.querySelector(".canvas");
    if (!answer.ok) {
      canvas.textContent = answer.message;
      continue;
    }
    const data = JSON.parse(answer.text);
    if (figure.dataset.plot === "occupancy") drawOccupancy(canvas, data);
    else drawBytes(canvas, data);
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", async () => {
  setupLogin();
  document.querySelectorAll("form.refine").forEach(makeRefine);
  await refresh();
  document.body.dataset.loaded = "1"; // for tests and scripts: everything is in
});
