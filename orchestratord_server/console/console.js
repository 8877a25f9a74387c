// The operator console: pools, replicas and tasks of one orchestratord, live.
//
// Everything here comes from the daemon's public API: the control-plane event stream
// (GET /v1/events: a snapshot, then pool, task and stats events), drain and reload
// (POST /v1/pools/{id}/drain|reload), and on the data plane cancel and a task's stream
// (POST /v1/tasks/{id}/cancel, GET /v1/tasks/{id}/stream). Keys stay in sessionStorage:
// this tab only.
"use strict";

const KEYS = "orchestratord.console.keys";
const HISTORY = 120; // stats points kept per pool: two minutes at one a second
const ENDED_SHOWN = 20; // ended tasks listed per pool
const RETRY_MS = [500, 1000, 2000, 5000];

const state = {
  keys: null,
  pools: new Map(), // pool_id -> PoolHealth
  tasks: new Map(), // task_id -> TaskSummary
  stats: new Map(), // pool_id -> [PoolStats]
  models: [],
  stream: null, // AbortController of the open event stream
  retries: 0,
  notes: new Map(), // pool_id -> the last action's answer
  drawPending: false,
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- keys and requests -----------------------------------------------------------------

function loadKeys() {
  try {
    return JSON.parse(sessionStorage.getItem(KEYS));
  } catch {
    return null;
  }
}

function saveKeys(keys) {
  state.keys = keys;
  if (keys) sessionStorage.setItem(KEYS, JSON.stringify(keys));
  else sessionStorage.removeItem(KEYS);
}

function headers(plane, extra = {}) {
  const key = plane === "data" ? state.keys.data || state.keys.control : state.keys.control;
  return { Authorization: `Bearer ${key}`, ...extra };
}

async function call(plane, method, path, body) {
  const init = { method, headers: headers(plane) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let payload = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = { message: text };
    }
  }
  return { status: response.status, ok: response.ok, body: payload };
}

function problem(answer) {
  const body = answer.body || {};
  const error = body.error || body;
  const fields = (body.errors || []).map((e) => `${e.loc}: ${e.msg}`).join("; ");
  return `${answer.status} ${error.code || ""} ${error.message || ""}${fields ? ` (${fields})` : ""}`.trim();
}

// -- the event stream ------------------------------------------------------------------

function setConnection(text, kind) {
  const node = $("#connection");
  node.textContent = text;
  node.dataset.kind = kind;
}

async function follow() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  setConnection("connecting…", "pending");
  let response;
  try {
    response = await fetch("/v1/events", {
      headers: headers("control", { Accept: "text/event-stream" }),
      signal: controller.signal,
    });
  } catch (error) {
    if (!controller.signal.aborted) retry(`cannot reach the daemon (${error.message})`);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    const answer = { status: response.status, body: await response.json().catch(() => null) };
    signOut(`refused: ${problem(answer)}`);
    return;
  }
  if (!response.ok) {
    retry(`the event stream answered ${response.status}`);
    return;
  }
  showBoard();
  setConnection("live", "live");
  state.retries = 0;
  await readEvents(response, handleEvent);
  if (!controller.signal.aborted) retry("the daemon closed the event stream");
}

function retry(why) {
  const wait = RETRY_MS[Math.min(state.retries, RETRY_MS.length - 1)];
  state.retries += 1;
  setConnection(`${why}; retrying in ${wait / 1000} s`, "down");
  setTimeout(() => state.keys && follow(), wait);
}

// Reads a text/event-stream response to its end (or until it is aborted), calling
// onEvent(name, payload) with each frame's event name and parsed JSON data.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (frame) onEvent(frame.event, frame.payload);
      }
    }
  } catch {
    // aborted, or the connection dropped: the caller decides what follows
  }
}

function parseFrame(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  return data.length ? { event, payload: JSON.parse(data.join("\n")) } : null;
}

function handleEvent(event, payload) {
  if (event === "snapshot") {
    state.pools = new Map(payload.pools.map((p) => [p.pool_id, p]));
    state.tasks = new Map(payload.tasks.map((t) => [t.task_id, t]));
  } else if (event === "pool") {
    state.pools.set(payload.pool_id, payload);
  } else if (event === "task") {
    state.tasks.set(payload.task_id, payload);
    forgetOldEnded(payload.pool_id);
  } else if (event === "stats") {
    const points = state.stats.get(payload.pool_id) || [];
    points.push(payload);
    if (points.length > HISTORY) points.shift();
    state.stats.set(payload.pool_id, points);
  }
  scheduleDraw();
}

function forgetOldEnded(poolId) {
  const ended = [...state.tasks.values()].filter((t) => t.pool_id === poolId && t.outcome);
  for (const task of ended.slice(0, Math.max(0, ended.length - 4 * ENDED_SHOWN))) {
    state.tasks.delete(task.task_id);
  }
}

// -- drawing ---------------------------------------------------------------------------

function scheduleDraw() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => {
    state.drawPending = false;
    draw();
  });
}

function draw() {
  const root = $("#pools");
  for (const [poolId, health] of state.pools) {
    let article = root.querySelector(`article[data-pool-id="${CSS.escape(poolId)}"]`);
    if (!article) {
      article = $("#pool-template").content.firstElementChild.cloneNode(true);
      article.dataset.poolId = poolId;
      $(".drain", article).addEventListener("click", () => askDrain(poolId));
      $(".reload", article).addEventListener("click", () => askReload(poolId));
      root.append(article);
    }
    drawPool(article, health);
  }
}

function badge(node, text, kind) {
  setText(node, text);
  node.dataset.kind = kind;
}

function drawPool(article, health) {
  const m = health.metrics || {};
  $(".pool-id", article).textContent = health.pool_id;
  badge($(".phase", article), health.phase || "unknown", health.phase);
  // Readiness is said apart only where the phase does not say it already.
  const readiness = $(".readiness", article);
  readiness.hidden = health.ready === (health.phase === "ready");
  badge(readiness, health.ready ? "takes work" : "takes no work", health.ready ? "ready" : "down");
  article.dataset.ready = String(health.ready);
  article.dataset.draining = String(health.draining);
  const error = $(".pool-error", article);
  error.hidden = !health.last_error;
  error.textContent = health.last_error ? `Last error: ${health.last_error}` : "";

  const slo = m.slo || {};
  const attainment = ["interactive", "batch"]
    .filter((p) => slo[p] && slo[p].attainment_ratio !== undefined)
    .map((p) => `${p} ${(100 * slo[p].attainment_ratio).toFixed(1)} %`)
    .join(", ");
  const model =
    health.desired_model_ref && health.desired_model_ref !== health.applied_model_ref
      ? `${health.applied_model_ref} → ${health.desired_model_ref}`
      : health.applied_model_ref;
  const facts = [
    ["Engine", `${health.engine}${health.engine_version ? ` ${health.engine_version}` : ""}`],
    ["Model", model],
    ["Queued", `${m.queue_depth ?? 0} (interactive ${m.queue_depth_interactive ?? 0}, batch ${m.queue_depth_batch ?? 0})`],
    ["Running / slots", `${m.running ?? 0} / ${m.slots_total ?? 0}`],
    ["SLO attainment", attainment || "no tasks in the window"],
  ];
  if (m.drain_remaining_ms !== undefined && m.drain_remaining_ms !== null) facts.push(["Drain deadline", `${(m.drain_remaining_ms / 1000).toFixed(1)} s left`]);
  const note = state.notes.get(health.pool_id);
  if (note) facts.push(["Last action", note]);
  $(".figures", article).replaceChildren(
    ...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]),
  );

  $(".replicas tbody", article).replaceChildren(
    ...(m.replicas || []).map((r) =>
      el(
        "tr",
        { "data-replica-id": r.replica_id, "data-state": r.state },
        el("th", { scope: "row", text: r.replica_id }),
        el("td", {}, el("span", { class: "badge", "data-kind": r.state, text: r.state })),
        el("td", { text: `${r.running ?? 0} / ${r.slots_total ?? 0}` }),
        el("td", { text: String(r.restarts ?? 0) }),
        el("td", { text: r.breaker || "" }),
        el("td", { text: r.last_error || "" }),
      ),
    ),
  );

  const tasks = [...state.tasks.values()].filter((t) => t.pool_id === health.pool_id);
  const running = tasks.filter((t) => !t.outcome && t.state !== "queued");
  const queued = tasks.filter((t) => t.state === "queued").sort((a, b) => a.queue_position - b.queue_position);
  const ended = tasks.filter((t) => t.outcome).slice(-ENDED_SHOWN).reverse();
  drawTasks($(".tasks tbody", article), [...running, ...queued, ...ended]);

  const points = state.stats.get(health.pool_id) || [];
  chart($(".chart.queue", article), points.map((p) => p.queue_depth));
  chart($(".chart.tokens", article), points.map((p) => (1000 * p.tokens_out) / p.interval_ms));
  chart($(".chart.first-token", article), points.map((p) => p.first_token_p50_ms ?? null));
}

// Task rows are kept per task and changed in place: the list is redrawn several times a
// second while tokens stream, and a row (or its Cancel button) made anew each time could
// swallow an operator's click that began on the one it replaced.
function drawTasks(tbody, tasks) {
  const kept = new Map();
  for (const row of tbody.children) if (row.dataset.taskId) kept.set(row.dataset.taskId, row);
  const rows = tasks.map((task) => {
    const row = kept.get(task.task_id) || taskRow(task.task_id);
    fillTaskRow(row, task);
    return row;
  });
  if (!rows.length) {
    const empty = $("td.empty", tbody);
    rows.push(empty ? empty.parentElement : el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No tasks yet." })));
  }
  const shown = tbody.children;
  if (rows.length !== shown.length || rows.some((row, i) => row !== shown[i])) tbody.replaceChildren(...rows);
}

function taskRow(taskId) {
  const cell = (name) => el("td", { class: name });
  return el(
    "tr",
    { "data-task-id": taskId },
    el(
      "th",
      { scope: "row" },
      el("button", {
        type: "button",
        class: "link",
        title: "Show the task's text",
        text: taskId.slice(0, 8),
        onclick: () => showTranscript(taskId),
      }),
    ),
    cell("priority"),
    el("td", { class: "state" }, el("span", { class: "badge" })),
    cell("where"),
    cell("tokens"),
    cell("first-token"),
    cell("outcome"),
    el("td", { class: "action" }, el("button", { type: "button", class: "cancel", text: "Cancel", onclick: () => askCancel(taskId) })),
  );
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function fillTaskRow(row, task) {
  const where =
    task.state === "queued"
      ? `#${task.queue_position} · starts in ~${((task.predicted_start_ms ?? 0) / 1000).toFixed(1)} s`
      : task.replica_id || "—";
  const outcome = task.outcome
    ? `${task.outcome.result} (${task.outcome.code})${task.outcome.message ? `: ${task.outcome.message}` : ""}`
    : "";
  row.dataset.state = task.state;
  setText($(".priority", row), task.priority);
  badge($(".state .badge", row), task.state, task.state);
  setText($(".where", row), where);
  setText($(".tokens", row), String(task.tokens_out));
  setText($(".first-token", row), task.first_token_ms !== undefined ? `${task.first_token_ms} ms` : "");
  setText($(".outcome", row), outcome);
  $(".cancel", row).hidden = Boolean(task.outcome);
}

function chart(svg, values) {
  const known = values.filter((v) => v !== null && v !== undefined);
  const top = Math.max(1, ...known);
  const step = 300 / Math.max(1, HISTORY - 1);
  const offset = 300 - step * (values.length - 1);
  const xy = values
    .map((v, i) => (v === null || v === undefined ? null : [offset + i * step, 58 - (v / top) * 54]))
    .filter(Boolean);
  if (xy.length === 1) xy.unshift([xy[0][0] - step, xy[0][1]]); // one point shows as a dash
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("class", "line");
  svg.replaceChildren(line);
  const last = known.length ? Math.round(known[known.length - 1]) : null;
  const text = last === null ? "no data yet" : `now ${last}, highest ${Math.round(top)}`;
  svg.setAttribute("aria-label", text);
  svg.closest("figure").querySelector(".latest").textContent = last === null ? "" : `· ${text}`;
}

// -- actions ---------------------------------------------------------------------------

function confirmDialog(title, text, fields = []) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-fields").replaceChildren(...fields);
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function noteFor(poolId, text) {
  state.notes.set(poolId, text);
  scheduleDraw();
}

async function askDrain(poolId) {
  const input = el("input", { id: "drain-deadline", type: "number", min: "0", step: "1000", value: "30000", required: true });
  const ok = await confirmDialog(
    `Drain ${poolId}?`,
    "Queued tasks are canceled now; running tasks may finish until the deadline, then they are canceled. The pool takes no work until it is reloaded.",
    [el("label", { for: "drain-deadline", text: "Deadline (ms)" }), input],
  );
  if (!ok) return;
  const answer = await call("control", "POST", `/v1/pools/${encodeURIComponent(poolId)}/drain`, {
    deadline_ms: Number(input.value),
  });
  noteFor(poolId, answer.ok ? `drain accepted (deadline ${answer.body.deadline_ms} ms)` : `drain refused: ${problem(answer)}`);
}

async function askReload(poolId) {
  const health = state.pools.get(poolId);
  const models = [...new Set([health.applied_model_ref, health.desired_model_ref, ...state.models].filter(Boolean))];
  const input = el("input", { id: "reload-model", list: "reload-models", value: health.applied_model_ref || "", required: true });
  const options = el("datalist", { id: "reload-models" }, ...models.map((m) => el("option", { value: m })));
  const ok = await confirmDialog(
    `Reload ${poolId}?`,
    "The pool drains, loads the model and serves it; if anything fails it rolls back to the model it serves now. Reloading a drained pool to its own model brings it back into service.",
    [el("label", { for: "reload-model", text: "Model" }), input, options],
  );
  if (!ok) return;
  const answer = await call("control", "POST", `/v1/pools/${encodeURIComponent(poolId)}/reload`, {
    new_model_ref: input.value,
  });
  noteFor(poolId, answer.ok ? `reload to ${answer.body.new_model_ref} accepted` : `reload refused: ${problem(answer)}`);
}

async function askCancel(taskId) {
  const task = state.tasks.get(taskId);
  if (!task) return;
  const ok = await confirmDialog(`Cancel task ${taskId.slice(0, 8)}?`, `Task ${taskId} on ${task.pool_id} ends with finish reason "canceled"; its client sees the end of its stream.`);
  if (!ok) return;
  const answer = await call("data", "POST", `/v1/tasks/${taskId}/cancel`);
  noteFor(task.pool_id, answer.ok ? `task ${taskId.slice(0, 8)} canceled` : `cancel refused: ${problem(answer)}`);
}

async function showTranscript(taskId) {
  const dialog = $("#transcript");
  const task = state.tasks.get(taskId) || { task_id: taskId };
  $("#transcript-title").textContent = `Task ${taskId}`;
  const facts = [
    ["Pool", task.pool_id],
    ["State", task.state],
    ["Priority", task.priority],
    ["Tokens", task.tokens_out],
  ].filter(([, v]) => v !== undefined);
  $("#transcript-facts").replaceChildren(...facts.flatMap(([n, v]) => [el("dt", { text: n }), el("dd", { text: String(v) })]));
  const text = $("#transcript-text");
  text.textContent = "";
  dialog.showModal();
  const controller = new AbortController();
  dialog.addEventListener("close", () => controller.abort(), { once: true });
  let response;
  try {
    response = await fetch(`/v1/tasks/${taskId}/stream`, { headers: headers("data"), signal: controller.signal });
  } catch {
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    text.textContent = `The task's text cannot be read: ${problem({ status: response.status, body })}`;
    return;
  }
  await readEvents(response, (event, payload) => {
    if (event === "token") text.append(payload.t);
    else if (event === "end") text.append(`\n\n[end: ${payload.finish_reason}, ${payload.tokens_out} tokens]`);
    else if (event === "error") text.append(`\n\n[error ${payload.code}: ${payload.message}]`);
  });
}

// -- sign in and out -------------------------------------------------------------------

function showBoard() {
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#forget").hidden = false;
}

function signOut(message) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  saveKeys(null);
  $("#board").hidden = true;
  $("#forget").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setConnection("not connected", "down");
}

async function loadModels() {
  const answer = await call("data", "GET", "/v1/models");
  if (answer.ok && answer.body && Array.isArray(answer.body.data)) state.models = answer.body.data.map((m) => m.id);
}

function start() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const control = $("#control-key").value.trim();
    const data = $("#data-key").value.trim();
    $("#login-error").textContent = "";
    saveKeys({ control, data: data || null });
    follow();
    loadModels();
  });
  $("#forget").addEventListener("click", () => signOut("Key forgotten."));
  const keys = loadKeys();
  if (keys && keys.control) {
    state.keys = keys;
    follow();
    loadModels();
  }
}

document.addEventListener("DOMContentLoaded", start);
