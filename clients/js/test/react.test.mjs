// The React hooks, rendered with react-dom into happy-dom, against a real server.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { Window } from "happy-dom";

const window = new Window({ url: "http://localhost/" });
globalThis.window = window;
globalThis.document = window.document;
// Node 20 has no navigator; react-dom reads navigator.userAgent when it loads.
if (globalThis.navigator === undefined) globalThis.navigator = window.navigator;

const { Component, act, createElement: h, useState } = await import("react");
const { createRoot } = await import("react-dom/client");
const { ReactiveClient } = await import("django-reactive-queries");
const {
  ReactiveProvider,
  useAction,
  useConnectionState,
  useMutation,
  usePaginatedQuery,
  useQuery,
} = await import("django-reactive-queries/react");
const { startServer } = await import("../testing/server.mjs");
const { spyOn } = await import("../testing/spy.mjs");
const { waitFor } = await import("../testing/wait.mjs");

let server;
let spy;
let client;
const roots = [];

before(async () => {
  server = await startServer();
  spy = spyOn(server.WebSocket);
  client = new ReactiveClient(server.url, { WebSocket: spy.WebSocket });
});

afterEach(() => {
  for (const root of roots.splice(0)) flushed(() => root.unmount());
});

after(async () => {
  client.close();
  await server?.dispose();
  await window.happyDOM.close();
});

/** Render `element` inside a ReactiveProvider; returns its container. */
function render(element, withClient = client) {
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  roots.push(root);
  flushed(() => root.render(withClient ? h(ReactiveProvider, { client: withClient }, element) : element));
  return container;
}

const text = (container, selector) => container.querySelector(selector)?.textContent;

/** Run `callback` and flush React's work synchronously (no frame can arrive meanwhile). */
function flushed(callback) {
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  try {
    act(callback);
  } finally {
    globalThis.IS_REACT_ACT_ENVIRONMENT = false;
  }
}

class ErrorBoundary extends Component {
  constructor(props) {
    super(props);
    this.state = { error: null };
  }

  static getDerivedStateFromError(error) {
    return { error };
  }

  render() {
    if (this.state.error) return h("p", { className: "error" }, `${this.state.error.code}: ${this.state.error.message}`);
    return this.props.children;
  }
}

/** Silence React's report of errors caught by a boundary. */
async function quietly(body) {
  const original = console.error;
  console.error = () => {};
  try {
    return await body();
  } finally {
    console.error = original;
  }
}

test("useQuery is undefined while loading, then live; equal args never resubscribe; 'skip' runs nothing", async () => {
  const channel = await client.mutation("chat.create_channel", { name: "react useQuery" });
  let setLimit;
  function Count() {
    const [limit, set] = useState(10);
    setLimit = set;
    // A new args object on every render, in another key order than the next component's.
    const count = useQuery("chat.message_count", { channel });
    const messages = useQuery("chat.list_messages", { limit, channel });
    const skipped = useQuery("chat.list_messages", "skip");
    return h(
      "div",
      null,
      h("span", { id: "count" }, count === undefined ? "loading" : String(count)),
      h("span", { id: "bodies" }, messages === undefined ? "loading" : messages.map((m) => m.body).join(",")),
      h("span", { id: "skipped" }, String(skipped)),
    );
  }
  const before = spy.ofType("subscribe").length;
  const container = render(h(Count));
  assert.equal(text(container, "#count"), "loading");
  await waitFor(() => text(container, "#count") === "0");
  assert.equal(text(container, "#skipped"), "undefined");
  await client.mutation("chat.send_message", { channel, body: "hello" });
  await waitFor(() => text(container, "#count") === "1" && text(container, "#bodies") === "hello");
  flushed(() => setLimit(10)); // same args, new object
  flushed(() => setLimit(5));
  await waitFor(() => text(container, "#bodies") === "hello");
  const subscribed = spy.ofType("subscribe").slice(before).map((frame) => [frame.query, frame.args]);
  assert.deepEqual(subscribed, [
    ["chat.message_count", { channel }],
    ["chat.list_messages", { limit: 10, channel }],
    ["chat.list_messages", { limit: 5, channel }],
  ]);
});

test("useQuery throws a failing query's error to the nearest error boundary", async () => {
  function Broken() {
    const value = useQuery("testapp.fails", { kind: "user_error" });
    return h("span", null, String(value));
  }
  await quietly(async () => {
    const container = render(h(ErrorBoundary, null, h(Broken)));
    await waitFor(() => text(container, ".error") === "user_error: Failed on purpose.");
  });
});

test("hooks outside a ReactiveProvider say so", async () => {
  function Orphan() {
    useQuery("tasks.list", {});
    return null;
  }
  await quietly(async () => {
    const container = render(h(ErrorBoundary, null, h(Orphan)), null);
    await waitFor(() => /ReactiveProvider/.test(text(container, ".error") ?? ""));
  });
});

test("useMutation runs a mutation; withOptimisticUpdate shows its effect in the same render", async () => {
  const created = await client.mutation("tasks.create", { text: "react optimistic" });
  let toggle;
  function Tasks() {
    const tasks = useQuery("tasks.list", {});
    const mutate = useMutation("tasks.toggle");
    toggle = (task) =>
      mutate.withOptimisticUpdate((store, args) => {
        const list = store.getQuery("tasks.list", {});
        if (list) store.setQuery("tasks.list", {}, list.map((t) => (t.id === args.id ? { ...t, completed: !task.completed } : t)));
      })({ id: task.id });
    if (tasks === undefined) return h("p", null, "loading");
    const task = tasks.find((t) => t.id === created);
    return h("p", { id: "task", "data-completed": String(task.completed) }, task.text);
  }
  const container = render(h(Tasks));
  await waitFor(() => container.querySelector("#task")?.getAttribute("data-completed") === "false");
  let pending;
  flushed(() => {
    pending = toggle({ id: created, completed: false });
  });
  assert.equal(container.querySelector("#task").getAttribute("data-completed"), "true", "optimistic, before any frame");
  assert.equal(await pending, true);
  await waitFor(() => client.connectionState().hasInflightRequests === false);
  flushed(() => {});
  assert.equal(container.querySelector("#task").getAttribute("data-completed"), "true", "the server's value after the result");
  assert.deepEqual(
    (await client.query("tasks.list", {})).find((t) => t.id === created).completed,
    true,
  );
});

test("useAction runs an action", async () => {
  function Runner() {
    const run = useAction("testapp.slow_action");
    const [result, setResult] = useState("idle");
    return h("button", { id: "run", onClick: () => run({ seconds: 0 }).then(setResult) }, result);
  }
  const container = render(h(Runner));
  await waitFor(() => container.querySelector("#run"));
  flushed(() => container.querySelector("#run").click());
  await waitFor(() => text(container, "#run") === "done");
});

test("usePaginatedQuery loads pages on demand, live", async () => {
  const channel = await client.mutation("chat.create_channel", { name: "react pages" });
  for (let i = 1; i <= 5; i++) await client.mutation("chat.send_message", { channel, body: `m${i}` });
  let loadMore;
  function Messages() {
    const { results, status, loadMore: more } = usePaginatedQuery("chat.paginated_messages", { channel }, { initialNumItems: 2 });
    loadMore = more;
    return h("p", { id: "page", "data-status": status }, results.map((m) => m.body).join(","));
  }
  const container = render(h(Messages));
  const status = () => container.querySelector("#page")?.getAttribute("data-status");
  assert.equal(status(), "LoadingFirstPage");
  await waitFor(() => status() === "CanLoadMore" && text(container, "#page") === "m5,m4");
  flushed(() => assert.equal(loadMore(2), true));
  assert.equal(status(), "LoadingMore");
  await waitFor(() => status() === "CanLoadMore" && text(container, "#page") === "m5,m4,m3,m2");
  await client.mutation("chat.send_message", { channel, body: "m6" });
  await waitFor(() => text(container, "#page") === "m6,m5,m4,m3,m2");
  flushed(() => loadMore(10));
  await waitFor(() => status() === "Exhausted" && text(container, "#page") === "m6,m5,m4,m3,m2,m1");
});

test("useConnectionState follows the connection", async () => {
  const own = new ReactiveClient(server.url, { WebSocket: server.WebSocket });
  function Indicator() {
    const { state, hasInflightRequests } = useConnectionState();
    return h("span", { id: "state" }, `${state} ${hasInflightRequests}`);
  }
  const container = render(h(Indicator), own);
  await waitFor(() => text(container, "#state") === "connected false");
  own.close();
  await waitFor(() => text(container, "#state") === "disconnected false");
});
