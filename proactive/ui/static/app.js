// proactive operations page: plain JavaScript over the app's own HTTP API.
// Every text from the API is put in the page with textContent or an SVG text
// node, never parsed as HTML (keys, texts and reasons are user content).
"use strict";

// The page is at /api/ui/: it reads the keyed API (../), or, where App Service
// signed the user in, the same handlers under data/ (proactive/api/page_data.py).
let API = new URL("../", document.baseURI);
const REFRESH_MS = 5000; // a running send's view polls this often; stops once final
const PAGE = 25; // sends and recipients per page
const RECIPIENTS_MAX = 10000; // read for the timeline and the table of one send

let timer = null;

function say(text, error) {
  $("status").textContent = text || "";
  $("status").classList.toggle("error", Boolean(error));
}

class SignInNeeded extends Error {}

function headers(extra) {
  // X-Proactive-Page: a page action, which another site's form can't send (CSRF).
  const h = Object.assign({ Accept: "application/json", "X-Proactive-Page": "1" }, extra || {});
  const key = sessionStorage.getItem("functions-key");
  if (key) h["x-functions-key"] = key;
  return h;
}

async function api(path, init) {
  const r = await fetch(new URL(path, API), Object.assign(
    { credentials: "same-origin", headers: headers() }, init || {}));
  if (r.status === 401 || r.status === 403) throw new SignInNeeded();
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

function showOnly(id) {
  for (const s of ["signin", "view-sends", "view-send", "view-reach", "view-stuck"]) {
    $(s).hidden = s !== id;
  }
  for (const [nav, view] of [["nav-sends", "view-sends"], ["nav-reach", "view-reach"],
    ["nav-stuck", "view-stuck"]]) {
    if (view === id) $(nav).setAttribute("aria-current", "page");
    else $(nav).removeAttribute("aria-current");
  }
}

// ---- Sends ------------------------------------------------------------------

const sendsPaging = { tokens: [""], index: 0 };

async function showSends() {
  showOnly("view-sends");
  const f = { state: $("f-state").value, topic: $("f-topic").value.trim(),
              text: $("f-text").value.trim() };
  const token = sendsPaging.tokens[sendsPaging.index];
  const body = await (await api(`sends${query({ ...f, limit: String(PAGE),
    continuation: token })}`)).json();
  const rows = body.items.map((item) => {
    const tr = el("tr");
    const link = el("a", item.key, { href: `#/send/${encodeURIComponent(item.key)}` });
    const key = el("td", null, { class: "key" });
    key.append(link);
    if (item.text) key.append(el("div", item.text, { class: "muted" }));
    const at = el("td");
    at.append(when(item.createdAt));
    const bar = el("td");
    bar.append(stackedBar(item.counts));
    tr.append(key, el("td", item.state), at,
              el("td", `${item.audience || ""} · ${(item.counts || {}).queued || 0}`), bar);
    return tr;
  });
  $("sends-table").tBodies[0].replaceChildren(...rows);
  sendsPaging.tokens[sendsPaging.index + 1] = body.continuation || null;
  $("sends-prev").disabled = sendsPaging.index === 0;
  $("sends-next").disabled = !body.continuation;
  say(rows.length ? `${rows.length} sends on this page` : "No sends match");
}

// ---- One send ---------------------------------------------------------------

const sendView = { key: "", recipients: [], page: 0 };

async function allRecipients(key) {
  const out = [];
  let token = "";
  do {
    const page = await (await api(`sends/${encodeURIComponent(key)}/recipients${query(
      { limit: "1000", continuation: token })}`)).json();
    out.push(...page.items);
    token = page.continuation || "";
  } while (token && out.length < RECIPIENTS_MAX);
  return out;
}

function recipientRows() {
  const pick = $("r-state").value, search = $("r-search").value.trim().toLowerCase();
  return sendView.recipients.filter((r) =>
    (!pick || r.state === pick || r.reason === pick)
    && (!search || String(r.recipient).toLowerCase().includes(search)));
}

function drawRecipients() {
  const rows = recipientRows();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  sendView.page = Math.min(sendView.page, pages - 1);
  const shown = rows.slice(sendView.page * PAGE, (sendView.page + 1) * PAGE).map((r) => {
    const tr = el("tr");
    const at = el("td");
    at.append(when(r.lastAttemptAt || r.firstAttemptAt));
    tr.append(el("td", r.recipient, { class: "key" }), el("td", r.state), el("td", r.reason || ""),
              el("td", r.attempts ?? ""), at);
    return tr;
  });
  $("rcpt-table").tBodies[0].replaceChildren(...shown);
  $("rcpt-page").textContent = `page ${sendView.page + 1} of ${pages} (${rows.length})`;
  $("rcpt-prev").disabled = sendView.page === 0;
  $("rcpt-next").disabled = sendView.page >= pages - 1;
}

function fillStateChoices() {
  const choices = new Set();
  for (const r of sendView.recipients) { choices.add(r.state); if (r.reason) choices.add(r.reason); }
  const select = $("r-state"), keep = select.value;
  const options = [el("option", "any", { value: "" })];
  for (const c of [...choices].sort()) options.push(el("option", c, { value: c }));
  select.replaceChildren(...options);
  select.value = choices.has(keep) ? keep : "";
}

async function showSend(key, quiet) {
  showOnly("view-send");
  if (sendView.key !== key) Object.assign(sendView, { key, recipients: [], page: 0 });
  const status = await (await api(`sends/${encodeURIComponent(key)}`)).json();
  const counts = status.counts || {};
  $("send-key").textContent = key;
  $("send-state").textContent = status.state;
  $("send-when").replaceChildren(...(status.createdAt ? ["started ", when(status.createdAt)] : []));
  sendView.recipients = await allRecipients(key);
  drawFunnel(counts);
  drawReasons(counts);
  drawTimeline(sendView.recipients);
  fillStateChoices();
  drawRecipients();
  $("cancel").disabled = status.state !== "running" && status.state !== "scheduled";
  const live = status.state === "running" || status.state === "scheduled";
  $("send-live").textContent = live ? `(refreshing every ${REFRESH_MS / 1000} s)` : "";
  if (!quiet) say("");
  stopTimer();
  if (live) timer = setTimeout(() => refresh(() => showSend(key, true)), REFRESH_MS);
}

async function downloadCsv() {
  // The report route, page after page, joined into one file (one header line).
  const key = sendView.key;
  const parts = [];
  let token = "";
  say("Preparing the CSV…");
  do {
    const r = await api(`sends/${encodeURIComponent(key)}/report${query(
      { format: "csv", limit: "1000", continuation: token })}`,
    { headers: headers({ Accept: "text/csv" }) });
    let text = await r.text();
    if (parts.length) text = text.slice(text.indexOf("\n") + 1);
    parts.push(text);
    const next = /<[^>]*[?&]continuation=([^&>]+)[^>]*>;\s*rel="next"/.exec(
      r.headers.get("Link") || "");
    token = next ? decodeURIComponent(next[1]) : "";
  } while (token);
  const link = el("a", null, { download: `${key.replace(/[^\w.-]+/g, "_")}-report.csv` });
  link.href = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  say("CSV downloaded");
}

// A confirmation dialog; `then` runs only if the answer is yes.
let confirmed = null;

function ask(title, text, yes, then) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  confirmed = then;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-no").focus(); // the safe answer is the default
}

function askCancel(key, after) {
  ask(`Cancel ${key}?`, "Recipients not yet sent to are skipped; those already sent keep "
    + "their message. A scheduled send fires no more.", "Cancel the send", async () => {
    await api(`sends/${encodeURIComponent(key)}/cancel`, { method: "POST" });
    say("Cancel queued: the worker carries it out in order with the send's other messages");
    await after();
  });
}

// ---- Reach ------------------------------------------------------------------

async function showReach() {
  showOnly("view-reach");
  const group = $("reach-group").value.trim();
  const body = await (await api(`reach${query({ group })}`)).json();
  const byStatus = new Map();
  for (const u of body.unreachable) byStatus.set(u.status, (byStatus.get(u.status) || 0) + 1);
  const counts = [...byStatus.entries()].sort((a, b) => b[1] - a[1]).map(([status, n]) => {
    const li = el("li");
    li.append(el("span", status), el("strong", n));
    return li;
  });
  $("reach-counts").replaceChildren(...(counts.length ? counts : [el("li", "nobody")]));
  $("tenants-table").tBodies[0].replaceChildren(...body.tenants.map((t) => {
    const tr = el("tr");
    tr.append(el("td", t.tenant, { class: "key" }), el("td", Object.entries(t.counts)
      .map(([k, n]) => `${k}: ${n}`).join(", ")));
    return tr;
  }));
  $("unreachable-table").tBodies[0].replaceChildren(...body.unreachable.map((u) => {
    const tr = el("tr");
    const at = el("td");
    at.append(when(u.at));
    tr.append(el("td", u.user, { class: "key" }), el("td", u.tenantId), el("td", u.status),
              el("td", u.topic), at);
    return tr;
  }));
  say(`${body.unreachable.length} people can't be reached${body.partial ? " (partial)" : ""}`);
}

// ---- Stuck ------------------------------------------------------------------

let requeueing = null;

async function showStuck() {
  showOnly("view-stuck");
  const [poison, schedules] = await Promise.all([
    api("poison").then((r) => r.json()), api("schedules").then((r) => r.json())]);
  $("poison-count").textContent = `${poison.count}${poison.more ? "+" : ""}`;
  $("poison-table").tBodies[0].replaceChildren(...poison.items.map((p) => {
    const tr = el("tr");
    const at = el("td");
    at.append(when(p.failedAt || p.insertedAt));
    const actions = el("td", null, { class: "actions-cell" });
    const requeue = el("button", "Requeue…", { type: "button" });
    requeue.addEventListener("click", () => {
      requeueing = p;
      $("requeue-text").value = p.message;
      $("requeue").returnValue = "";
      $("requeue").showModal();
    });
    const purge = el("button", "Purge…", { type: "button", class: "danger" });
    purge.addEventListener("click", () => ask("Delete this parked message?",
      `${p.reason}: ${p.detail}. It is gone for good.`, "Delete it", async () => {
        await api(`poison/${encodeURIComponent(p.id)}/purge`, { method: "POST" });
        say("Deleted");
        await showStuck();
      }));
    actions.append(requeue, purge);
    tr.append(at, el("td", p.reason), el("td", p.detail, { class: "key" }), actions);
    return tr;
  }));
  $("schedules-table").tBodies[0].replaceChildren(...schedules.items.map((item) => {
    const tr = el("tr");
    const due = el("td");
    due.append(when(item.due));
    const actions = el("td", null, { class: "actions-cell" });
    const cancel = el("button", "Cancel…", { type: "button", class: "danger" });
    cancel.addEventListener("click", () => askCancel(item.key, showStuck));
    actions.append(cancel);
    tr.append(el("td", item.key, { class: "key" }), el("td", item.recipient, { class: "key" }),
              due, el("td", item.state), actions);
    return tr;
  }));
}

async function requeueParked() {
  const p = requeueing;
  const text = $("requeue-text").value;
  // The message as it came is sent back without a body (it may carry fields only
  // the app may set); an edit is sent as the new message.
  await api(`poison/${encodeURIComponent(p.id)}/requeue`, Object.assign({ method: "POST" },
    text === p.message ? {} : { body: text, headers: headers({ "Content-Type": "application/json" }) }));
  say("Requeued: it is back on the outbox");
  await showStuck();
}

// ---- routing ----------------------------------------------------------------

function stopTimer() { if (timer) { clearTimeout(timer); timer = null; } }

async function refresh(render) {
  try {
    await render();
  } catch (err) {
    stopTimer();
    if (err instanceof SignInNeeded) { showOnly("signin"); say(""); return; }
    say(`Could not load: ${err.message}`, true);
  }
}

// Signed in by App Service (data/ answers), asked to sign in (401/403), or
// App Service authentication off (404): the keyed API, as locally.
async function detectMode() {
  const r = await fetch(new URL("data/session", document.baseURI),
    { credentials: "same-origin", headers: headers() });
  if (r.ok) {
    API = new URL("data/", document.baseURI);
    return true;
  }
  if (r.status === 401 || r.status === 403) {
    $("signin-key").hidden = true;
    $("signin-entra").hidden = false;
    if (r.status === 403) {
      $("signin-entra-text").textContent = "You are signed in, but your account lacks the "
        + "app role this page needs: ask the app's owner to assign it.";
    }
    showOnly("signin");
    return false;
  }
  return true;
}

function route() {
  stopTimer();
  say("");
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  if (hash.startsWith("send/")) return refresh(() => showSend(hash.slice(5)));
  if (hash === "reach") return refresh(showReach);
  if (hash === "stuck") return refresh(showStuck);
  return refresh(showSends);
}

function bind() {
  $("sends-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    Object.assign(sendsPaging, { tokens: [""], index: 0 });
    refresh(showSends);
  });
  $("open-key").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/send/${encodeURIComponent($("open-key-input").value.trim())}`;
  });
  $("reach-filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(showReach); });
  $("sends-next").addEventListener("click", () => { sendsPaging.index += 1; refresh(showSends); });
  $("sends-prev").addEventListener("click", () => { sendsPaging.index -= 1; refresh(showSends); });
  $("rcpt-prev").addEventListener("click", () => { sendView.page -= 1; drawRecipients(); });
  $("rcpt-next").addEventListener("click", () => { sendView.page += 1; drawRecipients(); });
  $("r-state").addEventListener("change", () => { sendView.page = 0; drawRecipients(); });
  $("r-search").addEventListener("input", () => { sendView.page = 0; drawRecipients(); });
  $("rcpt-filter").addEventListener("submit", (e) => e.preventDefault());
  $("csv").addEventListener("click", () => refresh(downloadCsv));
  $("cancel").addEventListener("click", () => askCancel(sendView.key,
    () => showSend(sendView.key, true)));
  $("confirm").addEventListener("close", () => {
    const then = confirmed;
    confirmed = null;
    if ($("confirm").returnValue === "yes" && then) refresh(then);
  });
  $("requeue").addEventListener("close", () => {
    if ($("requeue").returnValue === "yes") refresh(requeueParked);
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("functions-key", $("key-input").value);
    $("key-input").value = "";
    route();
  });
  window.addEventListener("hashchange", route);
}

bind();
detectMode().then((ok) => { if (ok) route(); }, () => route());
