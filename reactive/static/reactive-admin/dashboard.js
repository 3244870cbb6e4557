// The admin's live subscriptions dashboard: a client of the system's own reactive queries
// (reactive.live.*, staff only) over the WebSocket. No build step; charts are SVG drawn here.
import { ReactiveClient } from "../reactive/client.js";

const root = document.querySelector("#live");
const client = new ReactiveClient(root.dataset.websocketPath);
window.reactiveDashboard = { client };

const $ = (selector, within = root) => within.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.map((child) => (child instanceof Node ? child : String(child ?? ""))));
  return node;
}

const cell = (value, className) => element("td", className ? { class: className } : {}, value);
const ms = (value) => (value === null || value === undefined ? "–" : value < 1 ? `${(value * 1000).toFixed(0)} µs` : `${value.toFixed(1)} ms`);
const bytes = (value) => (value < 1024 ? `${value} B` : value < 1048576 ? `${(value / 1024).toFixed(1)} KB` : `${(value / 1048576).toFixed(1)} MB`);
const args = (value) => JSON.stringify(value ?? {});
const origin = (value) => (value ? `${value[1]} (${value[0]})` : "–");

function ago(unixSeconds) {
  if (!unixSeconds) return "–";
  const seconds = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (seconds < 60) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function showError(section, error) {
  $(`${section} tbody`)?.replaceChildren(element("tr", {}, element("td", { class: "live-error", colspan: 12 }, error.message)));
}

// Connection state -----------------------------------------------------------------------------
function showConnection({ state }) {
  const indicator = $("#live-state");
  indicator.dataset.state = state;
  indicator.textContent = state;
}
client.onConnectionChange(showConnection);
showConnection(client.connectionState());

// Invalidator ------------------------------------------------------------------------------------
client.onUpdate(
  "reactive.live.invalidator",
  {},
  (data) => {
    const figures = data.invalidator;
    const shown = figures
      ? [
          ["Backend", data.backend],
          ["Log head", figures.head ?? "–"],
          ["Processed", figures.processed],
          ["Lag (versions)", figures.lag ?? "–"],
          ["Batches/s", figures.batches_per_second.toFixed(1)],
          ["Records/batch", figures.records_per_batch.toFixed(2)],
          ["Live instances", figures.instances],
        ]
      : [["Backend", data.backend], ["Invalidator", "no statistics yet"]];
    $("#live-invalidator dl").replaceChildren(...shown.flatMap(([term, value]) => [element("dt", {}, term), element("dd", {}, value)]));
    const rows = [
      ...data.workers.map((worker) =>
        element("tr", { "data-role": worker.role }, cell(worker.process), cell(`worker (${worker.role})`), cell("–"), cell("–"), cell("–")),
      ),
      ...data.servers.map((server) =>
        element("tr", { "data-role": "server" }, cell(server.process), cell("server"), cell(server.connections), cell(server.instances), cell(server.processed)),
      ),
    ];
    $("#live-invalidator tbody").replaceChildren(...rows);
    $("#live-updated").textContent = data.time ? `updated ${new Date(data.time * 1000).toLocaleTimeString()}` : "";
  },
  (error) => showError("#live-invalidator", error),
);

// Connections -----------------------------------------------------------------------------------
client.onUpdate(
  "reactive.live.connections",
  {},
  (data) => {
    $("#live-connections .live-count").textContent = `(${data.total})`;
    $("#live-connections tbody").replaceChildren(
      ...data.connections.map((connection) =>
        element(
          "tr",
          { "data-lagging": connection.lagging },
          cell(connection.user ?? "anonymous"),
          cell(connection.process),
          cell(connection.address),
          cell(connection.connected_at ? new Date(connection.connected_at * 1000).toLocaleTimeString() : "–"),
          cell(connection.subscriptions),
          cell(connection.frames),
          cell(bytes(connection.bytes)),
          cell(connection.lagging ? `yes (over ${bytes(data.max_queued_bytes)})` : "no"),
        ),
      ),
    );
  },
  (error) => showError("#live-connections", error),
);

// Query instances, and why one re-ran ----------------------------------------------------------
let instances = [];
let chosenInstance = null;
const search = $("#live-search");
search.addEventListener("input", renderInstances);

/** An instance's arguments and counters, as table cells (the instances and a function's). */
function counterCells(instance) {
  return [
    cell(args(instance.args), "args"),
    cell(instance.subscribers, "subscribers"),
    cell(instance.runs, "runs"),
    cell(instance.updates, "updates"),
    cell(instance.unchanged, "unchanged"),
    cell(ms(instance.median_ms), "median"),
    cell(ms(instance.p99_ms), "p99"),
  ];
}

function renderInstances() {
  const needle = search.value.trim().toLowerCase();
  const shown = instances.filter((instance) => !needle || `${instance.name} ${args(instance.args)}`.toLowerCase().includes(needle));
  $("#live-instances tbody").replaceChildren(
    ...shown.map((instance) =>
      element(
        "tr",
        {
          "data-instance-id": instance.id,
          "aria-selected": instance.id === chosenInstance,
          onclick: () => {
            chosenInstance = instance.id;
            renderInstances();
          },
        },
        element(
          "td",
          { class: "name" },
          element("a", { href: "#live-function", onclick: (event) => { event.stopPropagation(); chooseFunction(instance.name); } }, instance.name),
        ),
        ...counterCells(instance),
        cell(ms(instance.total_ms), "total"),
        cell(bytes(instance.size), "size"),
        cell(ago(instance.last_run), "last-run"),
      ),
    ),
  );
  renderWhy();
}

function renderWhy() {
  const instance = instances.find((candidate) => candidate.id === chosenInstance);
  const section = $("#live-why");
  section.hidden = !instance;
  if (!instance) return;
  $(".live-why-name", section).textContent = `${instance.name}(${args(instance.args)})`;
  const entries = instance.why.length
    ? instance.why.map((why) =>
        element(
          "li",
          { "data-version": why.version },
          `version ${why.version}, ${ago(why.time)}, from ${origin(why.origin)}`,
          why.forgotten
            ? element("p", {}, "(that change record is no longer kept)")
            : element(
                "ul",
                {},
                ...why.matches.map((match) =>
                  element(
                    "li",
                    {},
                    `${match.table}${match.pk !== null ? ` pk ${match.pk}` : ""}: matched `,
                    element("code", {}, match.condition),
                    match.columns.length ? ` (compared ${match.columns.join(", ")} of the ${match.image} row)` : "",
                    match.unknown?.length ? ` (${match.unknown.join(", ")} not captured: matches any value)` : "",
                  ),
                ),
              ),
        ),
      )
    : [element("li", {}, "Not re-run by a write yet: this is its first run.")];
  $(".live-why-list", section).replaceChildren(...entries);
}

client.onUpdate(
  "reactive.live.instances",
  {},
  (data) => {
    instances = data.instances;
    $("#live-instances .live-count").textContent = `(${data.total})`;
    renderInstances();
  },
  (error) => showError("#live-instances", error),
);

// One function: its instances and a chart -------------------------------------------------------
let stopFunction = null;

function chooseFunction(name) {
  stopFunction?.();
  const section = $("#live-function");
  section.hidden = false;
  $(".live-function-name", section).textContent = name;
  stopFunction = client.onUpdate(
    "reactive.live.function",
    { name },
    (data) => renderFunction(data),
    (error) => showError("#live-function", error),
  );
}

function renderFunction(data) {
  const now = Math.floor(data.time ?? Date.now() / 1000);
  const seconds = 300;
  const runs = new Array(seconds).fill(0);
  const meanMs = new Array(seconds).fill(0);
  for (const [second, count, totalMs] of data.series) {
    const index = seconds - 1 - (now - second);
    if (index >= 0 && index < seconds) {
      runs[index] = count;
      meanMs[index] = count ? totalMs / count : 0;
    }
  }
  drawChart($('#live-function svg[data-series="runs"]'), runs);
  drawChart($('#live-function svg[data-series="ms"]'), meanMs);
  $("#live-function tbody").replaceChildren(
    ...data.instances.map((instance) =>
      element(
        "tr",
        { "data-instance-id": instance.id },
        ...counterCells(instance),
        cell(ago(instance.last_run), "last-run"),
      ),
    ),
  );
}

/** A line chart of ``values`` (one per second, oldest first) with its maximum marked. */
function drawChart(svg, values) {
  const width = 600;
  const height = 120;
  const top = 14;
  const max = Math.max(...values, 0);
  const scale = max > 0 ? (height - top - 2) / max : 0;
  const step = width / Math.max(1, values.length - 1);
  const points = values.map((value, index) => `${(index * step).toFixed(1)},${(height - 1 - value * scale).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points);
  line.setAttribute("class", "live-chart-line");
  const axis = document.createElementNS(ns, "line");
  for (const [name, value] of Object.entries({ x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "live-chart-axis" })) axis.setAttribute(name, value);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 11);
  label.setAttribute("class", "live-chart-label");
  label.textContent = `max ${Number.isInteger(max) ? max : max.toFixed(2)} · last 5 min`;
  svg.replaceChildren(axis, line, label);
}

// Writes ------------------------------------------------------------------------------------------
client.onUpdate(
  "reactive.live.writes",
  {},
  (data) => {
    $("#live-writes .live-tables tbody").replaceChildren(
      ...data.tables.map((table) =>
        element("tr", { "data-table": table.table }, cell(table.table), cell(table.records), cell(table.rows), cell(table.touched)),
      ),
    );
    $("#live-writes .live-recent tbody").replaceChildren(
      ...data.recent.map((write) =>
        element(
          "tr",
          { "data-version": write.version },
          cell(write.version),
          cell(ago(write.time)),
          cell(origin(write.origin)),
          cell(Object.entries(write.tables).map(([table, rows]) => `${table} (${rows})`).join(", ")),
          cell(write.touched),
        ),
      ),
    );
  },
  (error) => showError("#live-writes", error),
);
