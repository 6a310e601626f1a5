// The streamjobs dashboard: one ES module, no third-party code. Every figure comes from
// the JSON API (docs/api.md); every action is a call to it, checked by the server.
import { chart, spark } from "./chart.js";

const STATES = ["waiting", "running", "delayed", "dead", "completed"];
// A type page's tabs: the overview's columns, and the jobs that ended before they ran.
const TAB_STATES = [...STATES, "blocked", "expired"];
const POLL_MS = 3000;
// The pages in the nav. A new page is one entry here and one render function.
const PAGES = [
  { hash: "#/", label: "Overview", match: (p) => p[0] === "" || p[0] === "type" || p[0] === "job" },
  { hash: "#/dead", label: "Dead letters", match: (p) => p[0] === "dead" },
  { hash: "#/workers", label: "Workers", match: (p) => p[0] === "workers" },
  { hash: "#/schedules", label: "Schedules", match: (p) => p[0] === "schedules" },
  { hash: "#/events", label: "Events", match: (p) => p[0] === "events" },
];

let session = { auth: false, role: null, csrf: "" };
let timer = null;
let generation = 0;
let onResize = null; // the current page's redraw on a window resize (the chart)
let feed = null; // the events page's EventSource, closed when the page is left
window.addEventListener("resize", () => onResize && onResize());

// ---- small helpers ------------------------------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const enc = encodeURIComponent;
const main = () => document.getElementById("main");
// Replace the page's content (null and false children are left out).
const show = (...nodes) => main().replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
const canWrite = () => session.role === "admin";

function flash(text, error = false) {
  const box = h("div", { class: error ? "error" : "" }, text);
  document.getElementById("flash").append(box);
  setTimeout(() => box.remove(), error ? 8000 : 4000);
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function duration(sec) {
  if (!sec) return "—";
  if (sec < 60) return `${sec.toFixed(1)} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${Math.floor(sec % 60)} s`;
  return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
}

function when(ms) {
  if (!ms) return "—";
  return h("span", { title: new Date(ms).toISOString() }, `${new Date(ms).toLocaleString()} (${ago(ms)})`);
}

const badge = (state) => h("span", { class: `badge ${state}` }, state);
const num = (n, state) => h("td", { class: `num ${state || ""} ${n ? "" : "zero"}` }, n.toLocaleString());
const empty = (title, text) => h("div", { class: "empty" }, h("strong", {}, title), text || "");
const jobLink = (type, id) => h("a", { href: `#/job/${enc(type)}/${enc(id)}`, class: "mono" }, id);
const typeLink = (type) => h("a", { href: `#/type/${enc(type)}` }, type);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = session.csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (r.status === 401 && session.auth) {
    session.role = null;
    renderWho();
    location.hash = "#/login";
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || `HTTP ${r.status}`);
  return data;
}

// Parse "#/a/b?x=1" into ["a", "b"] and {x: "1"}.
function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function poll(fn, ms = POLL_MS) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    try { await fn(); } catch (e) { if (e.status !== 401) console.warn(e); }
    if (mine === generation) timer = setTimeout(tick, ms);
  };
  return tick();
}

function confirmDialog(text) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true }));
}

// ---- frame --------------------------------------------------------------------------

function renderNav(parts) {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...PAGES.map((p) => h("a", { href: p.hash, class: p.match(parts) ? "on" : "" }, p.label)));
}

function renderWho() {
  const who = document.getElementById("who");
  who.replaceChildren();
  if (!session.auth || !session.role) return;
  who.append(h("span", { class: `badge ${session.role === "read" ? "read" : "completed"}` },
    session.role === "read" ? "read-only" : "admin"));
  who.append(h("button", { class: "secondary", onclick: async () => {
    await api("POST", "/ui/logout");
    session.role = null;
    renderWho();
    location.hash = "#/login";
  } }, "Log out"));
}

async function render() {
  generation += 1;
  clearTimeout(timer);
  onResize = null;
  if (feed) { feed.close(); feed = null; }
  const { parts, params } = route();
  renderNav(parts);
  if (session.auth && !session.role && parts[0] !== "login") {
    location.hash = "#/login";
    return;
  }
  const pages = { "": overview, type: typePage, job: jobPage, dead: deadPage, workers: workersPage,
    schedules: schedulesPage, events: eventsPage, login: loginPage };
  const page = pages[parts[0]] || notFound;
  try {
    await page(parts.slice(1), params);
  } catch (e) {
    show(empty("Could not load this page", e.message));
  }
}

function notFound() {
  show(empty("No such page", h("a", { href: "#/" }, "Back to the overview")));
}

// ---- login --------------------------------------------------------------------------

function loginPage() {
  const error = h("p", { class: "error", id: "login-error" });
  const input = h("input", { type: "password", name: "key", id: "key", autocomplete: "current-password",
    placeholder: "API key", required: true });
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const r = await api("POST", "/ui/login", { key: input.value });
      session.role = r.role;
      session.csrf = r.csrf;
      renderWho();
      location.hash = "#/";
    } catch (e) {
      error.textContent = e.message;
      input.select();
    }
  } }, h("label", { for: "key" }, "API key (one of STREAMJOBS_API_KEYS)"), input, error,
  h("button", { type: "submit" }, "Log in"));
  show(h("div", { class: "panel login" }, h("h1", {}, "Log in"), form));
  input.focus();
}

// ---- overview -----------------------------------------------------------------------

async function overview() {
  const table = h("div");
  const chartBox = h("div");
  const pick = h("select", { id: "chart-type", "aria-label": "chart type", onchange: () => draw() });
  let last = null;
  const draw = () => {
    if (!last) return;
    const chosen = pick.value;
    const series = last.types.filter((s) => !chosen || s.type === chosen);
    const sum = (k) => last.types.length ? series.reduce((acc, s) => acc.map((v, i) => v + s[k][i]),
      new Array(series[0]?.[k].length || 60).fill(0)) : [];
    chartBox.replaceChildren(chart(sum("completed"), sum("failed"), last.start, last.minute_ms,
      chartBox.clientWidth));
  };
  onResize = draw;
  show(
    h("div", { class: "row spread" }, h("h1", {}, "Overview"), h("span", { class: "muted", id: "updated" })),
    h("div", { class: "panel" },
      h("div", { class: "row spread" }, h("h2", { class: "flush" }, "Throughput, last hour"), pick),
      h("div", { class: "legend" }, h("span", {}, h("i", { class: "completed" }), "completed / min"),
        h("span", {}, h("i", { class: "dead" }), "failed attempts / min"),
        h("span", {}, h("i", { class: "rate" }), "failure rate")),
      chartBox),
    table,
  );
  await poll(async () => {
    const [types, tp] = await Promise.all([api("GET", "/types"), api("GET", "/throughput?minutes=60")]);
    last = tp;
    const names = types.types.map((t) => t.type);
    if (pick.options.length !== names.length + 1) {
      const keep = pick.value;
      pick.replaceChildren(h("option", { value: "" }, "all types"), ...names.map((n) => h("option", { value: n }, n)));
      pick.value = names.includes(keep) ? keep : "";
    }
    draw();
    table.replaceChildren(typesTable(types.types, tp));
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  });
}

function typesTable(types, tp) {
  if (!types.length) {
    return empty("No job types yet",
      h("span", {}, "Enqueue a job and it shows here: ",
        h("code", {}, `curl -X POST ${location.origin}/jobs/demo -d '{"payload":{"n":1}}'`)));
  }
  const byType = Object.fromEntries(tp.types.map((s) => [s.type, s]));
  const rows = types.map((t) => {
    const s = byType[t.type] || { completed: [], failed: [] };
    const done = s.completed.reduce((a, b) => a + b, 0);
    const failed = s.failed.reduce((a, b) => a + b, 0);
    const rate = done + failed ? (100 * failed) / (done + failed) : 0;
    return h("tr", { "data-type": t.type },
      h("td", {}, typeLink(t.type), t.paused ? [" ", h("span", { class: "badge paused" }, "paused")] : null),
      ...STATES.map((st) => num(t[st], st)),
      h("td", { class: "num hide-narrow" }, Math.round(done).toLocaleString()),
      h("td", { class: `num hide-narrow ${rate ? "dead" : "zero"}` }, `${rate.toFixed(1)} %`),
      h("td", { class: "hide-narrow" }, spark(s.completed, s.failed)),
      h("td", { class: "num hide-narrow" }, t.waiting ? duration(t.oldest_waiting_age) : "—"));
  });
  return h("div", { class: "table-wrap" }, h("table", { id: "types" },
    h("thead", {}, h("tr", {}, h("th", {}, "type"), ...STATES.map((s) => h("th", { class: "num" }, s)),
      h("th", { class: "num hide-narrow" }, "done / h"), h("th", { class: "num hide-narrow" }, "failed"),
      h("th", { class: "hide-narrow" }, "last hour"), h("th", { class: "num hide-narrow" }, "oldest waiting"))),
    h("tbody", {}, rows)));
}

// ---- type ---------------------------------------------------------------------------

async function typePage([type], params) {
  const state = TAB_STATES.includes(params.get("state")) ? params.get("state") : "waiting";
  const cursors = (params.get("c") || "").split(",").filter(Boolean);
  const cursor = cursors[cursors.length - 1];
  const errorText = params.get("error") || "";
  const go = (changes) => {
    const p = new URLSearchParams({ state, c: cursors.join(","), error: errorText, ...changes });
    for (const [k, v] of [...p.entries()]) if (!v) p.delete(k);
    location.hash = `#/type/${enc(type)}?${p}`;
  };
  const tabs = h("div", { class: "tabs" });
  const facts = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  const list = h("div");
  const search = h("input", { type: "search", id: "job-search", placeholder: "job id", "aria-label": "job id" });
  const searchMsg = h("span", { class: "muted", id: "search-msg" });
  const pauseBox = h("span", { class: "row", id: "pause" });
  const errorBox = h("input", { type: "search", id: "error-filter", placeholder: "error contains…",
    value: errorText, "aria-label": "error contains" });
  show(
    h("div", { class: "row spread" }, h("div", { class: "row" }, h("h1", {}, type), pauseBox),
      h("form", { class: "inline", onsubmit: async (ev) => {
        ev.preventDefault();
        const id = search.value.trim();
        if (!id) return;
        try {
          await api("GET", `/jobs/${enc(type)}/${enc(id)}`);
          location.hash = `#/job/${enc(type)}/${enc(id)}`;
        } catch (e) {
          searchMsg.textContent = e.status === 404 ? `no job ${id}` : e.message;
        }
      } }, search, h("button", { type: "submit" }, "Find"), searchMsg)),
    tabs, facts,
    h("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); go({ state: "dead", c: "", error: errorBox.value.trim() }); } },
      errorBox, h("button", { type: "submit", class: "secondary" }, "Filter dead by error"),
      errorText ? h("a", { href: `#/type/${enc(type)}?state=dead` }, "clear") : null),
    list);

  const started = performance.now();
  const path = state === "dead"
    ? `/dead/${enc(type)}?limit=50${cursor ? `&cursor=${enc(cursor)}` : ""}${errorText ? `&error_contains=${enc(errorText)}` : ""}`
    : `/jobs/${enc(type)}?state=${state}&limit=50${cursor ? `&cursor=${enc(cursor)}` : ""}`;
  const [detail, page] = await Promise.all([api("GET", `/types/${enc(type)}`), api("GET", path)]);
  const st = detail.stats;
  tabs.replaceChildren(...TAB_STATES.map((s) => h("a", { class: `${s} ${s === state ? "on" : ""}`,
    href: `#/type/${enc(type)}?state=${s}` }, `${s} ${st[s].toLocaleString()}`)));
  pauseBox.replaceChildren(...pauseControls(type, st.paused));
  facts.replaceChildren(policyFacts(detail));
  list.replaceChildren(jobsTable(type, state, page.jobs, errorText),
    h("div", { class: "pager" },
      h("button", { class: "secondary", disabled: !cursors.length, onclick: () => go({ c: cursors.slice(0, -1).join(",") }) }, "← Previous"),
      h("span", { class: "muted" }, `page ${cursors.length + 1}`),
      h("button", { class: "secondary", id: "next-page", disabled: !page.next_cursor,
        onclick: () => go({ c: [...cursors, page.next_cursor].join(",") }) }, "Next →")));
  main().dataset.loadedMs = String(Math.round(performance.now() - started));
}

// A paused type's badge and the button that flips it (workers follow within a second).
function pauseControls(type, paused) {
  const flip = h("button", { class: paused ? "" : "secondary", id: "pause-toggle", disabled: !canWrite(),
    onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        await api("POST", `/types/${enc(type)}/${paused ? "resume" : "pause"}`);
        flash(`${paused ? "resumed" : "paused"} ${type}`);
        render();
      } catch (e) { flash(e.message, true); ev.target.disabled = false; }
    } }, paused ? "Resume" : "Pause");
  return [paused ? h("span", { class: "badge paused" }, "paused") : null, flip].filter(Boolean);
}

function policyFacts(detail) {
  const st = detail.stats;
  const p = detail.policy;
  const items = [
    ["enqueued (total)", st.enqueued.toLocaleString()], ["retried (total)", st.retried.toLocaleString()],
    ["oldest waiting", st.waiting ? duration(st.oldest_waiting_age) : "—"],
    ["live workers", String(detail.workers)],
  ];
  if (p) {
    items.push(["max attempts", String(p.max_attempts)], ["timeout", `${p.timeout} s`],
      ["backoff", `${p.backoff_base} s doubling, cap ${p.backoff_cap} s, jitter ${p.jitter}`],
      ["visibility timeout", `${p.visibility_timeout} s`], ["max deliveries", String(p.max_deliveries)],
      ["isolation", p.isolation]);
    // Limits, with what they hold now (GET /types/{type}: limits).
    const lim = detail.limits || {};
    if (p.max_running) items.push(["max running", `${lim.running ?? "?"} of ${p.max_running} running, ${lim.held ?? 0} parked`]);
    if (p.max_running_per_key) items.push(["max running per key", String(p.max_running_per_key)]);
    if (p.rate_limit) items.push(["rate limit", `${p.rate_limit} (${lim.rate_window_starts ?? 0} starts in the window${lim.rate_hold_ms ? `, held ${duration(lim.rate_hold_ms / 1000)}` : ""})`]);
    if (p.rate_limit_per_key) items.push(["rate limit per key", p.rate_limit_per_key]);
  }
  if (st.blocked) items.push(["blocked", `${st.blocked.toLocaleString()} waiting for their parents`]);
  const levels = Object.entries(st.waiting_by_priority || {}).filter(([k]) => k !== "normal");
  if (levels.length) items.push(["waiting by priority", Object.entries(st.waiting_by_priority).map(([k, v]) => `${k} ${v}`).join(", ")]);
  return h("div", {}, h("dl", { class: "facts", id: "policy" }, items.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    p ? null : h("p", { class: "muted" }, "Policy: no live worker runs this type, so its policy is not known here."));
}

function jobsTable(type, state, jobs, errorText) {
  if (!jobs.length) {
    return empty(`No ${state} jobs`, errorText ? `None whose error contains “${errorText}” (in the entries read).` : "");
  }
  const cols = {
    waiting: [["enqueued", (j) => when(j.enqueued_at)], ["attempts", (j) => j.attempts]],
    running: [["worker", (j) => j.consumer], ["running for", (j) => duration(j.idle_ms / 1000)], ["deliveries", (j) => j.deliveries]],
    delayed: [["due", (j) => when(j.due_at)]],
    blocked: [],
    completed: [["finished", (j) => when(j.finished_at)]],
    expired: [["expired", (j) => when(j.finished_at)]],
    dead: [["failed", (j) => when(j.failed_at)], ["attempts", (j) => j.attempts], ["reason", (j) => j.reason],
      ["error", (j) => j.error]],
  }[state];
  return h("div", { class: "table-wrap" }, h("table", { id: "jobs" },
    h("thead", {}, h("tr", {}, h("th", {}, "id"), ...cols.map(([k]) => h("th", { class: k === "error" ? "" : "hide-narrow" }, k)))),
    h("tbody", {}, jobs.map((j) => h("tr", {}, h("td", {}, jobLink(type, j.id)),
      ...cols.map(([k, f]) => h("td", { class: k === "error" ? "err mono" : "hide-narrow" }, f(j) ?? "—")))))));
}

// ---- job ----------------------------------------------------------------------------

async function jobPage([type, id]) {
  const box = h("div");
  show(h("p", {}, h("a", { href: `#/type/${enc(type)}` }, `← ${type}`)), box);
  await poll(async () => {
    let job;
    try {
      job = await api("GET", `/jobs/${enc(type)}/${enc(id)}`);
    } catch (e) {
      if (e.status !== 404) throw e;
      box.replaceChildren(empty(`No job ${id} of type ${type}`, "Never enqueued, or its record expired after result_ttl."));
      return;
    }
    box.replaceChildren(jobView(type, job));
  });
}

// States whose record no longer holds the payload (docs/api.md: GET /jobs/{type}/{id}).
const FINISHED = new Set(["completed", "cancelled", "expired"]);

function jobView(type, job) {
  const actions = [];
  const act = (label, cls, fn) => h("button", { class: cls, disabled: !canWrite(), onclick: async (ev) => {
    ev.target.disabled = true;
    try { await fn(); } catch (e) { flash(e.message, true); ev.target.disabled = false; }
  } }, label);
  if (job.state === "dead") {
    actions.push(act("Retry", "", async () => {
      await api("POST", `/dead/${enc(type)}/${enc(job.id)}/retry`);
      flash(`retried ${job.id}`);
      render();
    }));
  }
  if (["waiting", "delayed", "running", "blocked"].includes(job.state)) {
    const running = job.state === "running";
    actions.push(act("Cancel", "danger", async () => {
      const text = running ? `Stop job ${job.id}? Its attempt is stopped and it is not retried.`
        : `Cancel job ${job.id}? It will not run.`;
      if (!(await confirmDialog(text))) return;
      const r = await api("DELETE", `/jobs/${enc(type)}/${enc(job.id)}`);
      flash(r.outcome === "cancelled" ? `cancelled ${job.id}`
        : r.outcome === "uninterruptible" ? `${job.id} runs a handler that cannot be stopped: a failure will not be retried`
          : `${job.id}: cancel ${r.outcome}`);
      render();
    }));
  }
  actions.push(act("Enqueue a copy", "secondary", async () => {
    const r = await api("POST", `/jobs/${enc(type)}`, { payload: job.payload, headers: job.headers || {} });
    flash(`enqueued ${r.id}`);
    location.hash = `#/job/${enc(type)}/${enc(r.id)}`;
  }));
  const facts = [
    ["type", typeLink(type)], ["attempts", `${job.attempts}${job.max_attempts ? ` of ${job.max_attempts}` : ""}`],
    ["enqueued", when(job.enqueued_at)], ["updated", when(job.updated_at)],
    ["due", job.due_at ? when(job.due_at) : null], ["finished", job.finished_at ? when(job.finished_at) : null],
    ["worker", job.consumer], ["deliveries", job.deliveries || null], ["reason", job.reason],
  ].filter(([, v]) => v !== null && v !== undefined);
  const pretty = (v) => h("pre", {}, JSON.stringify(v, null, 2));
  return h("div", {},
    h("div", { class: "row spread" }, h("div", { class: "row" }, h("h1", { class: "mono", id: "job-id" }, job.id), badge(job.state)),
      h("div", { class: "row", id: "actions" }, actions)),
    !canWrite() ? h("p", { class: "muted" }, "Read-only key: actions are disabled.") : null,
    h("div", { class: "panel" }, h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    progressView(job),
    workflowView(type, job),
    job.error ? h("div", {}, h("h2", {}, "Last error"), h("pre", { class: "err", id: "job-error" }, job.error)) : null,
    job.traceback ? h("details", {}, h("summary", {}, "Traceback"), h("pre", {}, job.traceback)) : null,
    h("h2", {}, "Payload"),
    job.payload === null && FINISHED.has(job.state)
      ? h("p", { class: "muted", id: "job-payload" }, "Not kept once a job has finished (its record keeps the result and history).")
      : pretty(job.payload),
    job.headers && Object.keys(job.headers).length ? [h("h2", {}, "Headers"), pretty(job.headers)] : null,
    job.result !== null && job.result !== undefined ? [h("h2", {}, "Result"), h("div", { id: "job-result" }, pretty(job.result))] : null,
    historyView(job.history || []),
    job.logs && job.logs.length ? [h("h2", {}, "Log"), h("pre", { id: "job-logs", class: "logs" }, job.logs.join("\n"))] : null);
}

// ---- workflow ---------------------------------------------------------------------------

// A job's workflow: the jobs it runs after and those that run after it, walked both ways
// (at most WORKFLOW_MAX of them), laid out in columns by their longest path from a root,
// each with its state. Loaded after the page, so a large graph never holds it up.
const WORKFLOW_MAX = 40;
const refType = (ref) => ref.slice(0, ref.indexOf("/")).split("#")[0];
const refId = (ref) => ref.slice(ref.indexOf("/") + 1);

function workflowView(type, job) {
  if (!(job.parents || []).length && !(job.dependents || []).length) return null;
  const box = h("div", { class: "panel", id: "workflow" }, h("p", { class: "muted" }, "loading the workflow…"));
  loadWorkflow(type, job).then((nodes) => box.replaceChildren(workflowGraph(nodes, `${type}/${job.id}`)))
    .catch((e) => box.replaceChildren(h("p", { class: "err" }, `workflow: ${e.message}`)));
  return [h("h2", {}, "Workflow"), box];
}

async function loadWorkflow(type, job) {
  const nodes = new Map([[`${type}/${job.id}`, { type, id: job.id, state: job.state, parents: job.parents || [], dependents: job.dependents || [] }]]);
  const todo = [...nodes.values()].flatMap((n) => [...n.parents, ...n.dependents]);
  while (todo.length && nodes.size < WORKFLOW_MAX) {
    const ref = todo.shift();
    const key = `${refType(ref)}/${refId(ref)}`;
    if (nodes.has(key)) continue;
    let st;
    try {
      st = await api("GET", `/jobs/${enc(refType(ref))}/${enc(refId(ref))}`);
    } catch (e) {
      if (e.status !== 404) throw e;
      st = { state: "gone", parents: [], dependents: [] };
    }
    const node = { type: refType(ref), id: refId(ref), state: st.state, parents: st.parents || [], dependents: st.dependents || [] };
    nodes.set(key, node);
    todo.push(...node.parents, ...node.dependents);
  }
  return nodes;
}

function workflowGraph(nodes, here) {
  const keyOf = (ref) => `${refType(ref)}/${refId(ref)}`;
  const depth = new Map();
  const level = (key, seen = new Set()) => {
    if (depth.has(key)) return depth.get(key);
    if (seen.has(key)) return 0;  // a cycle cannot be enqueued; never loop on bad data
    seen.add(key);
    const parents = (nodes.get(key)?.parents || []).map(keyOf).filter((k) => nodes.has(k));
    const d = parents.length ? 1 + Math.max(...parents.map((k) => level(k, seen))) : 0;
    depth.set(key, d);
    return d;
  };
  const columns = [];
  for (const key of nodes.keys()) (columns[level(key)] ||= []).push(key);
  return h("div", { class: "workflow" }, columns.map((keys, i) => h("div", { class: "wf-col" },
    h("div", { class: "muted wf-step" }, i === 0 ? "first" : `then (${i})`),
    keys.map((key) => {
      const n = nodes.get(key);
      return h("div", { class: `wf-node${key === here ? " here" : ""}`, "data-ref": key },
        badge(n.state), h("div", { class: "mono" }, h("a", { href: `#/job/${enc(n.type)}/${enc(n.id)}` }, n.id.length > 14 ? `${n.id.slice(0, 12)}…` : n.id)),
        h("div", { class: "muted" }, n.type));
    }))),
  nodes.size >= WORKFLOW_MAX ? h("p", { class: "muted" }, `the first ${WORKFLOW_MAX} jobs of the workflow`) : null);
}

// What the handler reported with job.progress(fraction, message), while it runs and after.
function progressView(job) {
  if (job.progress === null || job.progress === undefined) return null;
  const pct = Math.round(job.progress * 100);
  return h("div", { class: "panel", id: "job-progress" },
    h("div", { class: "row spread" }, h("span", {}, job.progress_message || "progress"), h("span", { class: "mono" }, `${pct}%`)),
    h("progress", { max: "1", value: String(job.progress) }));
}

// Every attempt kept with the record (the last 25): when, how long, where, how it ended.
function historyView(attempts) {
  if (!attempts.length) return null;
  return [h("h2", {}, "Attempts"), h("table", { id: "job-history" },
    h("thead", {}, h("tr", {}, ["#", "started", "took", "worker", "outcome", "error"].map((c) => h("th", {}, c)))),
    h("tbody", {}, attempts.map((a) => h("tr", {},
      h("td", { class: "mono" }, String(a.attempt ?? "")),
      h("td", {}, a.started_at ? when(a.started_at) : "—"),
      h("td", { class: "mono" }, a.duration_ms !== null && a.duration_ms !== undefined ? `${a.duration_ms} ms` : "—"),
      h("td", { class: "mono" }, a.worker || "—"),
      h("td", {}, h("span", { class: `badge ${a.outcome}` }, a.outcome || "")),
      h("td", { class: "err" }, a.error || "")))))];
}

// ---- dead letters -------------------------------------------------------------------

async function deadPage(_, params) {
  const types = (await api("GET", "/types")).types;
  const withDead = types.filter((t) => t.dead > 0);
  const type = params.get("type") || withDead[0]?.type || "";
  const errorText = params.get("error") || "";
  if (!types.length || !type) {
    show(h("h1", {}, "Dead letters"), empty("No dead letters", "Jobs that run out of attempts land here."));
    return;
  }
  const go = (t, e) => { location.hash = `#/dead?${new URLSearchParams({ type: t, ...(e ? { error: e } : {}) })}`; };
  const pick = h("select", { id: "dead-type", "aria-label": "type", onchange: () => go(pick.value, errorBox.value.trim()) },
    types.map((t) => h("option", { value: t.type, selected: t.type === type }, `${t.type} (${t.dead})`)));
  const errorBox = h("input", { type: "search", id: "dead-error", placeholder: "error contains…", value: errorText, "aria-label": "error contains" });
  const query = errorText ? `&error_contains=${enc(errorText)}` : "";
  const only = errorText ? `?error_contains=${enc(errorText)}` : "";
  const page = await api("GET", `/dead/${enc(type)}?limit=200${query}`);
  const boxes = page.jobs.map((j) => h("input", { type: "checkbox", value: j.id, "aria-label": `select ${j.id}` }));
  const selected = () => boxes.filter((b) => b.checked).map((b) => b.value);
  const all = h("input", { type: "checkbox", id: "select-all", "aria-label": "select all", onchange: () => boxes.forEach((b) => { b.checked = all.checked; }) });
  const matching = errorText ? `dead jobs of ${type} whose error contains “${errorText}”` : `dead jobs of ${type}`;
  const run = async (what, fn) => {
    if (!(await confirmDialog(what))) return;
    try { flash(await fn()); } catch (e) { flash(e.message, true); }
    render();
  };
  const bySelected = (verb, done_, method, suffix) => async () => {
    const ids = selected();
    if (!ids.length) { flash("select some jobs first", true); return; }
    await run(`${verb} ${ids.length} selected job${ids.length > 1 ? "s" : ""} of ${type}?`, async () => {
      let done = 0;
      for (const id of ids) { await api(method, `/dead/${enc(type)}/${enc(id)}${suffix}`); done += 1; }
      return `${done_} ${done}`;
    });
  };
  const buttons = canWrite() ? h("div", { class: "row", id: "dead-actions" },
    h("button", { id: "retry-selected", onclick: bySelected("Retry", "retried", "POST", "/retry") }, "Retry selected"),
    h("button", { class: "danger", id: "purge-selected", onclick: bySelected("Purge", "purged", "DELETE", "") }, "Purge selected"),
    h("button", { class: "secondary", id: "retry-all", onclick: () => run(`Retry all ${matching}?`, async () =>
      `retried ${(await api("POST", `/dead/${enc(type)}/retry${only}`)).count}`) }, "Retry all matching"),
    h("button", { class: "secondary", id: "purge-all", onclick: () => run(`Purge all ${matching}? This cannot be undone.`, async () =>
      `purged ${(await api("DELETE", `/dead/${enc(type)}?confirm=true${query}`)).count}`) }, "Purge all matching"))
    : h("p", { class: "muted" }, "Read-only key: actions are disabled.");
  show(
    h("h1", {}, "Dead letters"),
    h("form", { class: "inline panel", onsubmit: (ev) => { ev.preventDefault(); go(pick.value, errorBox.value.trim()); } },
      pick, errorBox, h("button", { type: "submit", class: "secondary" }, "Filter")),
    page.jobs.length ? buttons : null,
    page.jobs.length ? h("div", { class: "table-wrap" }, h("table", { id: "dead" },
      h("thead", {}, h("tr", {}, h("th", {}, all), h("th", {}, "id"), h("th", { class: "hide-narrow" }, "failed"),
        h("th", { class: "hide-narrow" }, "attempts"), h("th", {}, "error"))),
      h("tbody", {}, page.jobs.map((j, i) => h("tr", {}, h("td", {}, boxes[i]), h("td", {}, jobLink(type, j.id)),
        h("td", { class: "hide-narrow" }, when(j.failed_at)), h("td", { class: "hide-narrow num" }, j.attempts),
        h("td", { class: "err mono" }, `${j.reason}: ${j.error}`))))))
      : empty(errorText ? `No dead job of ${type} whose error contains “${errorText}”` : `No dead jobs of ${type}`),
    page.next_cursor ? h("p", { class: "muted" }, "Showing the first 200; retry or purge “all matching” acts on every one.") : null);
}

// ---- workers ------------------------------------------------------------------------

async function workersPage() {
  const box = h("div");
  show(h("div", { class: "row spread" }, h("h1", {}, "Workers"), h("span", { class: "muted", id: "updated" })), box);
  await poll(async () => {
    const { workers } = await api("GET", "/workers");
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (!workers.length) {
      box.replaceChildren(empty("No workers running", h("span", {}, "Start one: ", h("code", {}, "streamjobs worker handlers"))));
      return;
    }
    box.replaceChildren(h("div", { class: "cards", id: "workers" }, workers.map(workerCard)));
  }, 2000);
}

function workerCard(w) {
  const age = Date.now() - (w.last_heartbeat || 0);
  const stale = age > 11000;
  const pct = w.concurrency ? Math.min(100, (100 * (w.in_flight || 0)) / w.concurrency) : 0;
  const fill = h("span");
  fill.style.width = `${pct}%`;
  return h("div", { class: "panel worker", "data-name": w.name },
    h("div", { class: "row spread" }, h("strong", { class: "mono" }, w.name), stale ? h("span", { class: "badge stale" }, "stale") : null),
    h("dl", { class: "facts" },
      h("dt", {}, "host"), h("dd", {}, w.host || "—"), h("dt", {}, "pid"), h("dd", {}, String(w.pid ?? "—")),
      h("dt", {}, "types"), h("dd", {}, w.types.length ? w.types.flatMap((t, i) => [i ? ", " : "", typeLink(t)]) : "—"),
      h("dt", {}, "in flight"), h("dd", {}, `${w.in_flight ?? 0} of ${w.concurrency ?? "?"}`, h("div", { class: "bar" }, fill)),
      h("dt", {}, "heartbeat"), h("dd", {}, ago(w.last_heartbeat)),
      h("dt", {}, "started"), h("dd", {}, ago(w.started_at))),
    h("h2", {}, "Running now"),
    w.running.length
      ? h("ul", { class: "running" }, w.running.map((r) => h("li", {}, jobLink(r.type, r.id), " ",
        h("span", { class: "muted" }, `${r.type} · attempt ${r.attempt} · ${duration((Date.now() - r.started_at) / 1000)}`))))
      : h("p", { class: "muted" }, "idle"));
}

// ---- schedules ----------------------------------------------------------------------

async function schedulesPage() {
  const box = h("div");
  show(h("div", { class: "row spread" }, h("h1", {}, "Schedules"), h("span", { class: "muted", id: "updated" })), box);
  await poll(async () => {
    const { schedules } = await api("GET", "/schedules");
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (!schedules.length) {
      box.replaceChildren(empty("No schedules", h("span", {}, "Add one: ",
        h("code", {}, "streamjobs schedule add nightly report --cron '0 3 * * *'"))));
      return;
    }
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ["name", "type", "when", "last run", "next run", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, schedules.map(scheduleRow)))));
  });
}

function scheduleRow(s) {
  const path = `/schedules/${enc(s.name)}`;
  const act = (label, cls, fn) => h("button", { class: cls, disabled: !canWrite(), onclick: async (ev) => {
    ev.target.disabled = true;
    try { await fn(); } catch (e) { flash(e.message, true); }
    render();
  } }, label);
  return h("tr", { "data-schedule": s.name },
    h("td", { class: "mono" }, s.name, s.paused ? [" ", h("span", { class: "badge paused" }, "paused")] : null),
    h("td", {}, typeLink(s.type)),
    h("td", { class: "mono" }, s.cron ? `${s.cron} (${s.tz})` : `every ${duration(s.every)}`),
    h("td", {}, s.last_run_ms ? when(s.last_run_ms) : "—"),
    h("td", {}, s.next_run_ms ? when(s.next_run_ms) : "—"),
    h("td", {}, h("div", { class: "row" },
      act(s.paused ? "Resume" : "Pause", "secondary", async () => {
        await api("POST", `${path}/${s.paused ? "resume" : "pause"}`);
        flash(`${s.paused ? "resumed" : "paused"} ${s.name}`);
      }),
      act("Run now", "secondary", async () => {
        const r = await api("POST", `${path}/run-now`);
        flash(`enqueued ${r.id}`);
      }),
      act("Delete", "danger", async () => {
        if (!(await confirmDialog(`Delete schedule ${s.name}? The jobs it enqueued stay.`))) return;
        await api("DELETE", path);
        flash(`deleted ${s.name}`);
      }))));
}

// ---- events -------------------------------------------------------------------------

// Live transitions of the chosen types, from GET /events (Server-Sent Events), newest
// first; the last EVENTS_KEPT are kept. The types are in the hash: #/events?types=a,b.
// The server's first message, `ready`, says the stream is followed from then on: only
// then is the page "live". A refusal (409: a type's events are off) is shown, not retried.
const EVENTS_KEPT = 200;
const EVENT_KINDS = ["enqueued", "started", "progress", "completed", "retrying", "failed", "dead",
  "cancelled", "expired", "debounced", "dead_retried", "unblocked"];
// Each event's badge wears the colour of the state it leads to: style.css, one place.

// Why the stream cannot be had: {refused: true, error} when the server answers it with an
// error (its JSON message), {refused: false, error} when it cannot be reached, null when
// it serves the stream now.
async function refusal(url) {
  const ctl = new AbortController();
  try {
    const r = await fetch(url, { credentials: "same-origin", signal: ctl.signal, headers: { accept: "application/json" } });
    if (r.ok) return null;
    const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
    return { refused: true, error: (data && data.error) || `HTTP ${r.status}` };
  } catch (e) {
    return { refused: false, error: e.message };
  } finally {
    ctl.abort();
  }
}

async function eventsPage(_, params) {
  const known = (await api("GET", "/types")).types.map((t) => t.type);
  const chosen = (params.get("types") || known.join(",")).split(",").filter(Boolean);
  const url = `/events?types=${chosen.map(enc).join(",")}`;
  const rows = h("tbody");
  const state = h("span", { id: "events-state", class: "badge read" });
  const problem = h("div", { id: "events-error", class: "panel error", hidden: true });
  const setState = (name, cls) => { state.textContent = name; state.dataset.state = name; state.className = `badge ${cls}`; };
  setState("connecting", "read");
  const kind = h("select", { id: "events-kind", onchange: () => filter() },
    h("option", { value: "" }, "every event"), EVENT_KINDS.map((k) => h("option", { value: k }, k)));
  const filter = () => {
    for (const tr of rows.children) tr.hidden = !!kind.value && tr.dataset.event !== kind.value;
  };
  const pick = h("div", { class: "row" }, known.map((t) => h("label", { class: "row" },
    h("input", { type: "checkbox", value: t, checked: chosen.includes(t), onchange: () => {
      const on = [...pick.querySelectorAll("input:checked")].map((i) => i.value);
      location.hash = `#/events?types=${on.map(enc).join(",")}`;
    } }), t)));
  const show1 = (msg) => {
    const e = JSON.parse(msg.data);
    const extra = e.error || e.message || e.reason || (e.progress !== undefined ? `${Math.round(e.progress * 100)}%` : "");
    const tr = h("tr", { "data-event": msg.type },
      h("td", {}, e.at ? new Date(Number(e.at)).toLocaleTimeString() : "—"),
      h("td", {}, typeLink(e.type)),
      h("td", {}, h("span", { class: `badge ${msg.type}` }, msg.type)),
      h("td", {}, jobLink(e.type, e.id)),
      h("td", { class: "mono" }, String(e.attempt ?? "")),
      h("td", { class: e.error ? "err" : "muted" }, extra));
    tr.hidden = !!kind.value && msg.type !== kind.value;
    rows.prepend(tr);
    while (rows.children.length > EVENTS_KEPT) rows.lastChild.remove();
  };
  // Paused: the connection stays (nothing is missed); new events are held, the last
  // EVENTS_KEPT of them, counted on the button, and shown on resume.
  let paused = false;
  let held = [];
  let heldCount = 0;
  let subscribed = false; // the server said `ready` on the current connection
  const add = (msg) => {
    if (!paused) { show1(msg); return; }
    held.push(msg);
    if (held.length > EVENTS_KEPT) held.shift();
    heldCount += 1;
    pause.textContent = `Resume (${heldCount.toLocaleString()} new)`;
  };
  const connect = () => {
    if (!chosen.length) { setState("no type chosen", "read"); return; }
    problem.hidden = true;
    const mine = new EventSource(url, { withCredentials: true });
    feed = mine;
    mine.addEventListener("ready", () => {
      subscribed = true;
      if (!paused) setState("live", "completed");
    });
    mine.onerror = async () => {
      subscribed = false;
      if (mine.readyState !== EventSource.CLOSED) { setState("reconnecting", "delayed"); return; }
      // Closed for good: the server refused the stream (or is gone). Say why.
      const why = await refusal(url);
      if (feed !== mine) return; // the page was left meanwhile
      feed = null;
      if (why === null) { connect(); return; }
      problem.dataset.state = why.refused ? "refused" : "stopped";
      setState(problem.dataset.state, "dead");
      problem.replaceChildren(h("strong", {}, "No live events: "), why.error, " ",
        h("button", { class: "secondary", onclick: () => { setState("connecting", "read"); connect(); } }, "Try again"));
      problem.hidden = false;
    };
    for (const k of EVENT_KINDS) mine.addEventListener(k, add);
  };
  const pause = h("button", { id: "events-pause", class: "secondary", onclick: () => {
    paused = !paused;
    if (paused) {
      setState("paused", "paused");
      pause.textContent = "Resume";
      return;
    }
    for (const msg of held) show1(msg);
    held = [];
    heldCount = 0;
    pause.textContent = "Pause";
    if (!feed && !problem.hidden) setState(problem.dataset.state, "dead");
    else if (!feed) setState("no type chosen", "read");
    else if (subscribed) setState("live", "completed");
    else setState("reconnecting", "delayed");
  } }, "Pause");
  show(h("div", { class: "row spread" }, h("div", { class: "row" }, h("h1", {}, "Events"), state),
    h("div", { class: "row" }, kind, pause)),
  problem,
  known.length ? pick : empty("No types yet", "Enqueue a job and its type shows here."),
  h("table", { id: "events" },
    h("thead", {}, h("tr", {}, ["at", "type", "event", "job", "attempt", ""].map((c) => h("th", {}, c)))),
    rows));
  connect();
}

// ---- start --------------------------------------------------------------------------

async function start() {
  session = await (await fetch("/ui/session", { credentials: "same-origin" })).json();
  renderWho();
  window.addEventListener("hashchange", render);
  await render();
}

start();
