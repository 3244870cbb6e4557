// The optimistic layer, against a scripted server that decides when each frame arrives.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { WebSocket } from "ws";

import { ReactiveClient, ReactiveError, isOptimistic, optimisticId, withOptimisticRow } from "django-reactive-queries";

import { scriptedServer } from "../testing/scripted_server.mjs";
import { Recorder, waitFor } from "../testing/wait.mjs";

let server;
let client;

beforeEach(async () => {
  server = await scriptedServer();
  client = new ReactiveClient(server.url, { WebSocket, backoffBaseMs: 10, backoffMaxMs: 50 });
});

afterEach(async () => {
  client.close();
  await server.close();
});

/** A mutation left pending when the test ends rejects with client_closed: expected. */
const ignore = (promise) => promise.catch(() => {});

const todos = (...done) => done.map((value, index) => ({ id: index + 1, done: value }));

/** Set one todo's `done` flag: an update that sets a state, so it may run again safely. */
function setDone(store, args) {
  const list = store.getQuery("todos.list", {});
  if (list !== undefined) {
    store.setQuery("todos.list", {}, list.map((todo) => (todo.id === args.id ? { ...todo, done: args.done } : todo)));
  }
}

/** Subscribe to todos.list and answer it with `value`; returns the recorder and the query id. */
async function liveTodos(connection, value) {
  const shown = new Recorder();
  client.onUpdate("todos.list", {}, shown.callback);
  const subscribe = await connection.frame((frame) => frame.type === "subscribe");
  connection.send({ type: "transition", version: 1, updates: [{ id: subscribe.id, value }] });
  await shown.next();
  return { shown, id: subscribe.id };
}

test("an optimistic update shows at once, runs again on each newer server value, and goes when the result arrives", async () => {
  const connection = await server.connection(0);
  const { shown, id } = await liveTodos(connection, todos(false));

  const pending = client.mutation("todos.set", { id: 1, done: true }, { optimisticUpdate: setDone });
  assert.deepEqual(shown.last, todos(true), "shown synchronously, before any frame");
  const mutation = await connection.frame((frame) => frame.type === "mutation");

  // Another client adds a todo: the update is applied on top of the new server value.
  connection.send({ type: "transition", version: 2, updates: [{ id, value: todos(false, false) }] });
  await shown.next((value) => value.length === 2);
  assert.deepEqual(shown.last, todos(true, false));

  // Until the result arrives the update stays, whatever the server says...
  connection.send({ type: "transition", version: 3, updates: [{ id, value: todos(false, true) }] });
  await shown.next((value) => value[1]?.done);
  assert.deepEqual(shown.last, todos(true, true));

  // ...and it goes exactly with the result: what shows is the server's value.
  connection.send({ type: "mutation_result", request_id: mutation.request_id, ok: true, value: null, version: 3 });
  assert.equal(await pending, null);
  assert.deepEqual(shown.last, todos(false, true));
  assert.equal(client.connectionState().hasInflightRequests, false);
});

test("a failed mutation rolls its update back and rejects with code, message and data", async () => {
  const connection = await server.connection(0);
  const { shown } = await liveTodos(connection, todos(false, false));
  const serverValue = shown.last;
  const pending = client.mutation("todos.set", { id: 2, done: true }, { optimisticUpdate: setDone });
  assert.deepEqual(shown.last, todos(false, true));
  const mutation = await connection.frame((frame) => frame.type === "mutation");
  connection.send({
    type: "mutation_result",
    request_id: mutation.request_id,
    ok: false,
    error: { code: "user_error", message: "Not yours.", data: { id: 2 } },
  });
  await assert.rejects(pending, (error) => {
    assert.ok(error instanceof ReactiveError);
    assert.deepEqual([error.code, error.message, error.data], ["user_error", "Not yours.", { id: 2 }]);
    return true;
  });
  assert.equal(shown.last, serverValue, "back to the very value the server sent");
});

test("an error frame about a mutation's request_id rolls it back too", async () => {
  const connection = await server.connection(0);
  const { shown } = await liveTodos(connection, todos(false));
  const pending = client.mutation("todos.set", { id: 1, done: true }, { optimisticUpdate: setDone });
  const mutation = await connection.frame((frame) => frame.type === "mutation");
  connection.send({
    type: "error",
    request_id: mutation.request_id,
    error: { code: "limit_exceeded", message: "At most 100 requests in flight." },
  });
  await assert.rejects(pending, { code: "limit_exceeded" });
  assert.deepEqual(shown.last, todos(false));
});

test("updates stack in the order made; each goes with its own result", async () => {
  const connection = await server.connection(0);
  const { shown, id } = await liveTodos(connection, todos(false, false));
  const first = client.mutation("todos.set", { id: 1, done: true }, { optimisticUpdate: setDone });
  const second = client.mutation("todos.set", { id: 2, done: true }, { optimisticUpdate: setDone });
  // A third changes what the second set: order matters.
  const third = client.mutation("todos.set", { id: 2, done: false }, { optimisticUpdate: setDone });
  assert.deepEqual(shown.last, todos(true, false));
  await connection.frame((frame) => frame.type === "mutation" && frame.request_id === 3);
  const [m1, m2, m3] = connection.ofType("mutation");

  connection.send({ type: "transition", version: 2, updates: [{ id, value: todos(true, false) }] });
  connection.send({ type: "mutation_result", request_id: m1.request_id, ok: true, value: 1, version: 2 });
  await first;
  assert.deepEqual(shown.last, todos(true, false));

  connection.send({ type: "mutation_result", request_id: m2.request_id, ok: false, error: { code: "forbidden", message: "No." } });
  await assert.rejects(second, { code: "forbidden" });
  assert.deepEqual(shown.last, todos(true, false), "the third's update still applies");

  const mark = shown.values.length;
  connection.send({ type: "transition", version: 3, updates: [{ id, value: todos(true, true) }] });
  await shown.next(() => true, { since: mark });
  assert.deepEqual(shown.last, todos(true, false), "the server's new value with the third's update on top");
  connection.send({ type: "mutation_result", request_id: m3.request_id, ok: true, value: 3, version: 3 });
  await third;
  assert.deepEqual(shown.last, todos(true, true));
});

test("an update that throws is skipped; the others still apply", async () => {
  const connection = await server.connection(0);
  const { shown } = await liveTodos(connection, todos(false, false));
  const errors = [];
  const original = console.error;
  console.error = (...args) => errors.push(args);
  try {
    ignore(
      client.mutation("todos.bad", {}, {
        optimisticUpdate: () => {
          throw new Error("a bug in an update");
        },
      }),
    );
    ignore(client.mutation("todos.set", { id: 2, done: true }, { optimisticUpdate: setDone }));
  } finally {
    console.error = original;
  }
  assert.deepEqual(shown.last, todos(false, true));
  assert.ok(errors.some((args) => args.some((arg) => arg instanceof Error && arg.message === "a bug in an update")));
});

test("an update can show a query as loading (setQuery undefined) and onto a query not yet loaded", async () => {
  const connection = await server.connection(0);
  const watch = client.watchQuery("todos.count", {});
  const changes = new Recorder();
  const stop = watch.subscribe(() => changes.callback(watch.getSnapshot()));
  const subscribe = await connection.frame((frame) => frame.type === "subscribe");
  assert.equal(watch.getSnapshot(), undefined);
  ignore(client.mutation("todos.add", {}, { optimisticUpdate: (store) => store.setQuery("todos.count", {}, 1) }));
  assert.deepEqual(watch.getSnapshot(), { value: 1 });
  connection.send({ type: "transition", version: 1, updates: [{ id: subscribe.id, value: 0 }] });
  await changes.next((entry) => entry?.value === 1 && changes.values.length >= 1);
  assert.deepEqual(watch.getSnapshot(), { value: 1 }, "the update stays on top of the first value");
  ignore(client.mutation("todos.reset", {}, { optimisticUpdate: (store) => store.setQuery("todos.count", {}, undefined) }));
  assert.equal(watch.getSnapshot(), undefined);
  stop();
});

test("after a reconnect an update stays until the resubscribed queries have their values again", async () => {
  const first = await server.connection(0);
  const { shown, id } = await liveTodos(first, todos(false));
  const pending = client.mutation("todos.set", { id: 1, done: true }, { optimisticUpdate: setDone });
  const mutation = await first.frame((frame) => frame.type === "mutation");
  first.drop();

  const second = await server.connection(1);
  const resent = await second.frame((frame) => frame.type === "mutation");
  assert.deepEqual(resent, mutation);
  assert.deepEqual(await second.frame((frame) => frame.type === "subscribe"), { type: "subscribe", id, query: "todos.list", args: {} });
  // The stored result comes back before the query's new value: the update must not go yet, or
  // the value from before the drop (without the mutation) would show for a moment.
  second.send({ type: "mutation_result", request_id: resent.request_id, ok: true, value: "ok", version: 5 });
  assert.equal(await pending, "ok");
  assert.deepEqual(shown.last, todos(true));
  second.send({ type: "transition", version: 5, updates: [{ id, value: todos(true) }] });
  await waitFor(() => !client._layer.has(resent.request_id), { message: "the update dropped" });
  assert.deepEqual(shown.last, todos(true));
  assert.equal(client._layer.updates.length, 0);
});

// Optimistic creates: the recipe of the README ("Creating a row").

/** The README's addNote, against this test's client. */
function addNote(text) {
  const key = optimisticId();
  const pending = client.mutation("notes.create", { text, key }, {
    optimisticUpdate: (localStore) => {
      const notes = localStore.getQuery("notes.list", {});
      if (notes !== undefined) {
        localStore.setQuery("notes.list", {}, withOptimisticRow(notes, { id: key, key, text }, "key"));
      }
    },
  });
  return { key, pending };
}

test("an optimistic row shows at once and steps aside, never doubled, when the server's row arrives", async () => {
  const connection = await server.connection(0);
  const shown = new Recorder();
  client.onUpdate("notes.list", {}, shown.callback);
  const subscribe = await connection.frame((frame) => frame.type === "subscribe");
  const older = { id: 1, key: "made-elsewhere", text: "older" };
  connection.send({ type: "transition", version: 1, updates: [{ id: subscribe.id, value: [older] }] });
  await shown.next();

  const { key, pending } = addNote("new");
  assert.equal(shown.last.length, 2, "shown synchronously, before any frame");
  const optimistic = shown.last[1];
  assert.deepEqual(optimistic, { id: key, key, text: "new" });
  assert.ok(isOptimistic(optimistic.id) && key.startsWith("optimistic:"));
  const mutation = await connection.frame((frame) => frame.type === "mutation");
  assert.deepEqual(mutation.args, { text: "new", key });

  // Another client's row arrives first: the optimistic row stays, on top of it.
  const other = { id: 2, key: "other", text: "someone else's" };
  connection.send({ type: "transition", version: 2, updates: [{ id: subscribe.id, value: [older, other] }] });
  await shown.next((value) => value.length === 3);
  assert.deepEqual(shown.last, [older, other, optimistic]);

  // The mutation's own commit arrives before its result (guarantee 6): the real row alone.
  const real = { id: 3, key, text: "new" };
  connection.send({ type: "transition", version: 3, updates: [{ id: subscribe.id, value: [older, other, real] }] });
  await shown.next((value) => value.some((note) => note.id === 3));
  assert.deepEqual(shown.last, [older, other, real]);
  assert.equal(isOptimistic(shown.last[2].id), false);

  connection.send({ type: "mutation_result", request_id: mutation.request_id, ok: true, value: 3, version: 3 });
  assert.equal(await pending, 3);
  assert.deepEqual(shown.last, [older, other, real]);
  for (const value of shown.values) {
    const keys = value.map((note) => note.key);
    assert.equal(new Set(keys).size, keys.length, `a row shown twice: ${JSON.stringify(value)}`);
  }
});

test("optimistic ids are distinct and recognisable; withOptimisticRow adds only what is missing", () => {
  const ids = new Set(Array.from({ length: 100 }, () => optimisticId()));
  assert.equal(ids.size, 100);
  for (const id of ids) assert.ok(isOptimistic(id));
  for (const id of [1, "1", "optimistic", null, undefined, { id: "optimistic:x" }]) assert.equal(isOptimistic(id), false);

  const rows = [{ key: "a" }];
  assert.deepEqual(withOptimisticRow(rows, { key: "b" }, "key"), [{ key: "a" }, { key: "b" }]);
  assert.deepEqual(withOptimisticRow(rows, { key: "b" }, "key", { at: "start" }), [{ key: "b" }, { key: "a" }]);
  assert.equal(withOptimisticRow(rows, { key: "a", extra: 1 }, "key"), rows, "already there: the same array");
  assert.deepEqual(rows, [{ key: "a" }], "never modified");
});
