// Paginated queries: page by page, with fixed end cursors (PROTOCOL.md "Pagination").

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebSocket } from "ws";

import { ReactiveClient } from "django-reactive-queries";

import { scriptedServer } from "../testing/scripted_server.mjs";
import { startServer } from "../testing/server.mjs";
import { Recorder, waitFor } from "../testing/wait.mjs";

describe("against a scripted server", () => {
  let server;
  let client;
  before(async () => {
    server = await scriptedServer();
    client = new ReactiveClient(server.url, { WebSocket });
  });
  after(async () => {
    client.close();
    await server.close();
  });

  const page = (rows, isDone, continueCursor) => ({ page: rows, is_done: isDone, continue_cursor: continueCursor });

  test("the last page's end is fixed before the next page, and pages answered out of order assemble in order", async () => {
    const connection = await server.connection(0);
    const states = new Recorder();
    const query = client.paginatedQuery("feed.items", { feed: 7 }, { initialNumItems: 2 }, states.callback);
    assert.equal(query.getState().status, "LoadingFirstPage");
    assert.equal(query.loadMore(2), false, "nothing to load more of yet");

    const subscribes = () => connection.ofType("subscribe");
    const first = await connection.frame((frame) => frame.type === "subscribe");
    assert.deepEqual(first.args, { feed: 7, pagination: { num_items: 2, cursor: null, end_cursor: null } });
    connection.send({ type: "transition", version: 1, updates: [{ id: first.id, value: page([50, 40], false, "c40") }] });
    await states.next((state) => state.status === "CanLoadMore");
    assert.deepEqual(states.last, { results: [50, 40], status: "CanLoadMore" });

    assert.equal(query.loadMore(2), true);
    assert.equal(query.getState().status, "LoadingMore");
    await waitFor(() => subscribes().length === 3);
    const [, fixed, second] = subscribes();
    assert.deepEqual(fixed.args.pagination, { num_items: 2, cursor: null, end_cursor: "c40" }, "page 0 fixed at its continue_cursor");
    assert.deepEqual(second.args.pagination, { num_items: 2, cursor: "c40", end_cursor: null }, "page 1 starts there");
    assert.ok(connection.frames.indexOf(fixed) < connection.frames.indexOf(second));
    assert.deepEqual(await connection.frame((frame) => frame.type === "unsubscribe"), { type: "unsubscribe", id: first.id });

    // Page 1 answers before the fixed page 0; a late frame for the old page 0 changes nothing.
    connection.send({ type: "transition", version: 2, updates: [{ id: second.id, value: page([30, 20], false, "c20") }] });
    connection.send({ type: "transition", version: 2, updates: [{ id: first.id, value: page([60, 50], false, "c50") }] });
    await states.next((state) => state.results.length === 4);
    assert.deepEqual(states.last, { results: [50, 40, 30, 20], status: "LoadingMore" });
    // The fixed page 0 holds a row inserted meanwhile: it grew, nothing moved into page 1.
    connection.send({ type: "transition", version: 3, updates: [{ id: fixed.id, value: page([60, 50, 40], false, "c40") }] });
    await states.next((state) => state.status === "CanLoadMore" && state.results.length === 5);
    assert.deepEqual(states.last.results, [60, 50, 40, 30, 20]);

    query.loadMore(5);
    await waitFor(() => subscribes().length === 5);
    const [, , , fixedSecond, third] = subscribes();
    assert.deepEqual(fixedSecond.args.pagination, { num_items: 2, cursor: "c40", end_cursor: "c20" });
    assert.deepEqual(third.args.pagination, { num_items: 5, cursor: "c20", end_cursor: null });
    connection.send({ type: "transition", version: 4, updates: [{ id: third.id, value: page([10], true, "c10") }] });
    connection.send({ type: "transition", version: 4, updates: [{ id: fixedSecond.id, value: page([30, 20], false, "c20") }] });
    await states.next((state) => state.status === "Exhausted");
    assert.deepEqual(states.last.results, [60, 50, 40, 30, 20, 10]);
    assert.equal(query.loadMore(1), false);

    // A row added after the end makes the last page able to load more again.
    connection.send({ type: "transition", version: 5, updates: [{ id: third.id, value: page([10, 5], false, "c5") }] });
    await states.next((state) => state.status === "CanLoadMore");

    query.unsubscribe();
    await waitFor(() => connection.ofType("unsubscribe").length === 5);
  });

  test("a page that fails reports its error", async () => {
    const connection = await server.connection(0);
    const errors = new Recorder();
    const states = new Recorder();
    const query = client.paginatedQuery("feed.broken", {}, { initialNumItems: 3 }, states.callback, errors.callback);
    const subscribe = await connection.frame((frame) => frame.type === "subscribe" && frame.query === "feed.broken");
    connection.send({ type: "transition", version: 6, updates: [{ id: subscribe.id, error: { code: "user_error", message: "Invalid cursor." } }] });
    const error = await errors.next();
    assert.equal(error.code, "user_error");
    assert.equal(states.last.error, error);
    query.unsubscribe();
  });
});

describe("against a real server", () => {
  let server;
  let client;
  before(async () => {
    server = await startServer();
    client = new ReactiveClient(server.url, { WebSocket: server.WebSocket });
  });
  after(async () => {
    client.close();
    await server?.dispose();
  });

  test("rows inserted and deleted between pages leave no gap and no duplicate", async () => {
    // Only a message's author (or staff) may delete it: the messages are sent signed in.
    client.authenticate(await client.action("testapp.token_for", { username: "pages-author" }));
    const channel = await client.mutation("chat.create_channel", { name: "pages" });
    const send = (body) => client.mutation("chat.send_message", { channel, body });
    const ids = [];
    for (let i = 0; i < 20; i++) ids.push(await send(`m${i}`));

    const states = new Recorder();
    const query = client.paginatedQuery("chat.paginated_messages", { channel }, { initialNumItems: 4 }, states.callback);
    const settled = (status) => states.next((state) => state.status === status, { since: states.values.length });
    const idsOf = (state) => state.results.map((message) => message.id);
    const current = async () => (await client.query("chat.list_messages", { channel, limit: 200 })).map((m) => m.id).reverse();
    const check = async () => {
      await waitFor(async () => {
        const shown = idsOf(query.getState());
        return query.getState().status !== "LoadingMore" && JSON.stringify(shown) === JSON.stringify((await current()).slice(0, shown.length));
      }, { message: "the pages to show a prefix of the channel, newest first" });
    };
    await settled("CanLoadMore");
    assert.deepEqual(idsOf(states.last), ids.slice(-4).reverse());

    // New messages on top, one deleted at the end of page 0: page 0 is still the live window.
    ids.push(await send("new 1"));
    await client.mutation("chat.delete_message", { id: ids[17] });
    await check();

    assert.ok(query.loadMore(4));
    await settled("CanLoadMore");
    await check();
    // Between pages: delete the rows on both sides of the boundary, insert on top.
    const shown = idsOf(query.getState());
    await client.mutation("chat.delete_message", { id: shown[3] });
    await client.mutation("chat.delete_message", { id: shown[4] });
    ids.push(await send("new 2"));
    await check();
    const before = idsOf(query.getState());
    assert.equal(new Set(before).size, before.length, "no duplicate");

    assert.ok(query.loadMore(4));
    await settled("CanLoadMore");
    await client.mutation("chat.delete_message", { id: ids[1] });
    assert.ok(query.loadMore(10));
    await settled("Exhausted");
    await check();
    const all = idsOf(query.getState());
    assert.deepEqual(all, await current(), "every message exactly once, newest first");
    for (const state of states.values) {
      assert.equal(new Set(idsOf(state)).size, state.results.length, "no state ever repeated a row");
    }
    query.unsubscribe();
  });
});
