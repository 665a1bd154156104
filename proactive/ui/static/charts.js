// proactive operations page: DOM helpers and the charts (plain SVG), loaded
// before app.js. Text goes in with textContent or SVG text nodes only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Times in the viewer's zone; the UTC instant on hover.
function when(iso) {
  const node = el("time");
  if (!iso) return node;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) { node.textContent = iso; return node; }
  node.dateTime = d.toISOString();
  node.textContent = d.toLocaleString();
  node.title = d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return node;
}

// ---- outcome counts ---------------------------------------------------------

const KINDS = ["sent", "skipped", "failed"];

function outcome(counts) {
  const c = counts || {};
  const done = KINDS.reduce((n, k) => n + (c[k] || 0), 0);
  return { queued: c.queued || 0, sent: c.sent || 0, skipped: c.skipped || 0,
           failed: c.failed || 0, pending: Math.max(0, (c.queued || 0) - done) };
}

function stackedBar(counts) {
  const o = outcome(counts);
  const total = Math.max(o.queued, o.sent + o.skipped + o.failed) || 1;
  const bar = el("span", null, { class: "bar", role: "img",
    "aria-label": `${o.sent} sent, ${o.skipped} skipped, ${o.failed} failed, `
      + `${o.pending} pending of ${o.queued}` });
  for (const k of KINDS) {
    const part = el("span", null, { class: `k-${k}` });
    part.style.width = `${(100 * o[k]) / total}%`; // CSSOM, allowed by the CSP
    bar.append(part);
  }
  bar.title = bar.getAttribute("aria-label");
  return bar;
}

// ---- charts of one send ----------------------------------------------------

function drawFunnel(counts) {
  // queued → sent → read → acknowledged: read/acked only if the API has them.
  const steps = [["queued", "Queued"], ["sent", "Sent"]];
  if ("read" in counts) steps.push(["read", "Read"]);
  if ("acked" in counts) steps.push(["acked", "Acknowledged"]);
  const max = Math.max(1, ...steps.map(([k]) => counts[k] || 0));
  const width = 320, row = 26;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${steps.length * row + 4}`, role: "img",
    "aria-label": steps.map(([k, label]) => `${label} ${counts[k] || 0}`).join(", ") });
  steps.forEach(([k, label], i) => {
    const n = counts[k] || 0;
    const w = Math.max(1, ((width - 120) * n) / max);
    chart.append(svg("text", { x: 0, y: i * row + 17 }, label));
    chart.append(svg("rect", { x: 90, y: i * row + 4, width: w, height: row - 8,
      class: `k-${k}`, fill: getComputedStyle(document.documentElement)
        .getPropertyValue(`--${k}`).trim() || "#555" }));
    chart.append(svg("text", { x: 94 + w, y: i * row + 17 }, n));
  });
  $("funnel").replaceChildren(chart);
}

function drawReasons(counts) {
  const items = Object.entries(counts)
    .filter(([k]) => /^(skipped|failed)_/.test(k))
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => {
      const li = el("li");
      li.append(el("span", k.replace("_", ": ").replaceAll("_", "-")), el("strong", n));
      return li;
    });
  if (!items.length) items.push(el("li", "none"));
  $("reasons").replaceChildren(...items);
}

function drawTimeline(recipients) {
  // Deliveries per minute, from each recipient's last attempt (their result; the
  // report's lastAttemptAt, the delivery row's updatedAt).
  const perMinute = new Map();
  for (const r of recipients) {
    const t = Date.parse(r.lastAttemptAt || r.firstAttemptAt || "");
    if (Number.isNaN(t) || !["sent", "failed", "skipped"].includes(r.state)) continue;
    const m = Math.floor(t / 60000);
    perMinute.set(m, (perMinute.get(m) || 0) + 1);
  }
  const minutes = [...perMinute.keys()].sort((a, b) => a - b);
  const width = 640, height = 140, left = 36, bottom = 20;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (!minutes.length) {
    chart.setAttribute("aria-label", "No deliveries yet");
    chart.append(svg("text", { x: left, y: height / 2 }, "No deliveries yet"));
    $("timeline").replaceChildren(chart);
    return;
  }
  const first = minutes[0], last = minutes[minutes.length - 1];
  // At least ten minutes wide (a short send is not one wall of a bar), at most four hours.
  const span = Math.min(Math.max(last - first + 1, 10), 240);
  const max = Math.max(...perMinute.values());
  const bw = (width - left) / span;
  chart.setAttribute("aria-label", `Deliveries per minute over ${span} minutes, at most ${max}`);
  chart.append(svg("text", { x: 0, y: 12 }, max));
  chart.append(svg("text", { x: 0, y: height - bottom }, 0));
  for (let i = 0; i < span; i += 1) {
    const n = perMinute.get(last - span + 1 + i) || 0;
    const h = ((height - bottom - 6) * n) / max;
    const bar = svg("rect", { x: left + i * bw, y: height - bottom - h,
      width: Math.max(1, bw - 1), height: h, fill: "#1e7b34" });
    const minute = new Date((last - span + 1 + i) * 60000);
    bar.append(svg("title", {}, `${minute.toLocaleTimeString()} (${minute.toISOString()
      .slice(11, 16)} UTC): ${n}`));
    chart.append(bar);
  }
  const from = new Date((last - span + 1) * 60000), to = new Date(last * 60000);
  chart.append(svg("text", { x: left, y: height - 4 }, from.toLocaleTimeString()));
  chart.append(svg("text", { x: width - 70, y: height - 4 }, to.toLocaleTimeString()));
  $("timeline").replaceChildren(chart);
}
