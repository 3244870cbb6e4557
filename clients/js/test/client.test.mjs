// The client core against a real server (Daphne running the demo project).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ReactiveClient, ReactiveError } from "django-reactive-queries";

import { startServer } from "../testing/server.mjs";
import { spyOn } from "../testing/spy.mjs";
import { Recorder, waitFor } from "../testing/wait.mjs";

let server;
const clients = [];

function connect(options = {}) {
  const client = new ReactiveClient(server.url, { WebSocket: server.WebSocket, ...options });
  clients.push(client);
  return client;
}

async function newChannel(client, name) {
  return client.mutation("chat.create_channel", { name: `${name} ${Math.random().toString(36).slice(2, 8)}` });
}

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const client of clients) client.close();
  await server?.dispose();
});

describe("queries", () => {
  test("a live query gets its value, then a new value after each commit that changes it", async () => {
    const client = connect();
    const channel = await newChannel(client, "live");
    const counts = new Recorder();
    const stop = client.onUpdate("chat.message_count", { channel }, counts.callback);
    await counts.next((count) => count === 0);
    await client.mutation("chat.send_message", { channel, body: "one" });
    await counts.next((count) => count === 1);
    await client.mutation("chat.send_message", { channel, body: "two" });
    await counts.next((count) => count === 2);
    stop();
  });

  test("identical queries share one server subscription, counted by reference", async () => {
    const spy = spyOn(server.WebSocket);
    const client = connect({ WebSocket: spy.WebSocket });
    const channel = await newChannel(client, "dedup");
    const first = new Recorder();
    const second = new Recorder();
    const stopFirst = client.onUpdate("chat.list_messages", { channel, limit: 5 }, first.callback);
    const stopSecond = client.onUpdate("chat.list_messages", { limit: 5, channel }, second.callback);
    await first.next();
    await second.next();
    const subscribes = () => spy.ofType("subscribe").filter((frame) => frame.query === "chat.list_messages");
    assert.equal(subscribes().length, 1, "one subscribe for two identical queries");
    const id = subscribes()[0].id;

    stopFirst();
    assert.equal(spy.ofType("unsubscribe").length, 0, "still one subscriber left");
    await client.mutation("chat.send_message", { channel, body: "still live" });
    await second.next((messages) => messages.some((message) => message.body === "still live"));
    assert.equal(first.values.length, 1, "an ended listener hears nothing more");

    stopSecond();
    assert.deepEqual(spy.ofType("unsubscribe"), [{ type: "unsubscribe", id }]);

    // A query subscribed again after it ended gets a new id, so late frames of the old one
    // cannot be taken for it.
    const third = new Recorder();
    const stopThird = client.onUpdate("chat.list_messages", { channel, limit: 5 }, third.callback);
    await third.next((messages) => messages.length === 1);
    assert.equal(subscribes().length, 2);
    assert.notEqual(subscribes()[1].id, id);
    stopThird();
  });

  test("a second subscriber to a query already loaded gets its value without a new subscription", async () => {
    const spy = spyOn(server.WebSocket);
    const client = connect({ WebSocket: spy.WebSocket });
    const first = new Recorder();
    const stop = client.onUpdate("chat.list_channels", {}, first.callback);
    await first.next();
    assert.deepEqual(await client.query("chat.list_channels", {}), first.last);
    assert.equal(spy.ofType("subscribe").length, 1);
    stop();
  });

  test("query() resolves with one value and ends its subscription", async () => {
    const spy = spyOn(server.WebSocket);
    const client = connect({ WebSocket: spy.WebSocket });
    const tasks = await client.query("tasks.list", {});
    assert.ok(Array.isArray(tasks) && tasks.length >= 3);
    assert.deepEqual(Object.keys(tasks[0]).sort(), ["completed", "id", "text"]);
    assert.equal(spy.ofType("unsubscribe").length, 1);
  });

  test("a failing query reports its error and stays live until its data changes", async () => {
    const client = connect();
    const text = `task ${Math.random()}`;
    const values = new Recorder();
    const errors = new Recorder();
    const stop = client.onUpdate("testapp.task_or_error", { text }, values.callback, errors.callback);
    const error = await errors.next();
    assert.ok(error instanceof ReactiveError);
    assert.equal(error.code, "user_error");
    assert.equal(error.message, "No such task yet.");
    assert.deepEqual(error.data, { text });
    const id = await client.mutation("tasks.create", { text });
    assert.equal(await values.next(), id);
    stop();
  });

  test("subscribing to an unknown function or with invalid arguments reports an error", async () => {
    const client = connect();
    await assert.rejects(client.query("chat.no_such_query", {}), { code: "not_found" });
    await assert.rejects(client.query("chat.message_count", { channel: "not a number" }), (error) => {
      assert.equal(error.code, "invalid_args");
      assert.ok(Array.isArray(error.data.channel));
      return true;
    });
  });
});

describe("mutations and actions", () => {
  test("a mutation resolves after the updates its commit caused (read your own writes)", async () => {
    const client = connect();
    const channel = await newChannel(client, "ryow");
    const counts = new Recorder();
    const stop = client.onUpdate("chat.message_count", { channel }, counts.callback);
    await counts.next();
    for (let i = 1; i <= 3; i++) {
      await client.mutation("chat.send_message", { channel, body: `message ${i}` });
      assert.equal(counts.last, i, "the new count arrived before the mutation resolved");
    }
    stop();
  });

  test("a failed mutation rejects with a ReactiveError carrying code, message and data", async () => {
    const client = connect();
    await assert.rejects(client.mutation("tasks.toggle", { id: 987654 }), (error) => {
      assert.ok(error instanceof ReactiveError && error instanceof Error);
      assert.equal(error.code, "user_error");
      assert.equal(error.message, "No such task.");
      assert.deepEqual(error.data, { id: 987654 });
      return true;
    });
    await assert.rejects(client.mutation("tasks.create", {}), (error) => {
      assert.equal(error.code, "invalid_args");
      assert.deepEqual(Object.keys(error.data), ["text"]);
      return true;
    });
    await assert.rejects(client.mutation("tasks.list", {}), { code: "not_found" });
    assert.equal(client.connectionState().hasInflightRequests, false);
  });

  test("an action resolves with its value", async () => {
    const client = connect();
    assert.equal(await client.action("testapp.slow_action", { seconds: 0 }), "done");
  });

  test("an action in flight when the connection drops fails with connection_lost and is not sent again", async () => {
    const spy = spyOn(server.WebSocket);
    const client = connect({ WebSocket: spy.WebSocket });
    await client.query("chat.list_channels", {});
    const pending = client.action("testapp.slow_action", { seconds: 1 });
    assert.equal(client.connectionState().hasInflightRequests, true);
    client.reconnectNow();
    await assert.rejects(pending, { code: "connection_lost" });
    await waitFor(() => client.connectionState().state === "connected");
    await client.query("chat.list_channels", {});
    assert.equal(spy.ofType("action").length, 1);
  });

  test("a mutation whose result was lost is sent again after the reconnect and runs once", async () => {
    const spy = spyOn(server.WebSocket);
    const client = connect({ WebSocket: spy.WebSocket });
    const text = `replayed ${Math.random()}`;
    let dropped = false;
    spy.intercept = (frame, socket) => {
      if (frame.type === "mutation_result" && !dropped) {
        // The mutation committed, but its result is lost with the connection.
        dropped = true;
        socket.terminate();
        return false;
      }
      return true;
    };
    const id = await client.mutation("testapp.add_task_counted", { text });
    assert.ok(dropped);
    assert.equal(spy.sockets.length, 2, "the client reconnected");
    const [first, again] = spy.ofType("mutation");
    assert.deepEqual(again, first, "sent again with the same request_id");
    const [connectFirst, connectAgain] = spy.ofType("connect");
    assert.equal(connectAgain.session_id, connectFirst.session_id);
    assert.equal(connectFirst.session_id, client.sessionId);
    const tasks = await client.query("tasks.list", {});
    assert.deepEqual(
      tasks.filter((task) => task.text === text).map((task) => task.id),
      [id],
      "the mutation ran once",
    );
  });

  test("a mutation made while disconnected is sent once connected", async () => {
    const client = connect();
    await client.query("chat.list_channels", {});
    await server.stop();
    await waitFor(() => client.connectionState().state !== "connected");
    const pending = client.mutation("tasks.create", { text: "made offline" });
    assert.equal(client.connectionState().hasInflightRequests, true);
    await server.start();
    client.reconnectNow();
    assert.equal(typeof (await pending), "number");
  });
});

describe("connection", () => {
  test("after a server restart the client reconnects by itself, resubscribes and stays live", async () => {
    const client = connect({ backoffBaseMs: 20, backoffMaxMs: 200 });
    const states = new Recorder();
    client.onConnectionChange(states.callback);
    const channel = await newChannel(client, "restart");
    const counts = new Recorder();
    const stop = client.onUpdate("chat.message_count", { channel }, counts.callback);
    await counts.next((count) => count === 0);

    const mark = states.values.length;
    await server.stop();
    await states.next((state) => state.state === "disconnected", { since: mark });
    await states.next((state) => state.retries >= 2, { since: mark });
    await server.start();
    await states.next((state) => state.state === "connected", { since: mark });
    await client.mutation("chat.send_message", { channel, body: "after restart" });
    assert.equal(counts.last, 1);
    await waitFor(() => client.connectionState().retries === 0, { message: "retries reset once synced" });
    assert.deepEqual(client.connectionState(), { state: "connected", retries: 0, hasInflightRequests: false });
    stop();
  });

  test("close() ends the socket and fails what is pending with client_closed", async () => {
    const client = connect();
    await client.query("chat.list_channels", {});
    const pending = client.action("testapp.slow_action", { seconds: 1 });
    client.close();
    await assert.rejects(pending, { code: "client_closed" });
    assert.equal(client.connectionState().state, "disconnected");
    await assert.rejects(client.mutation("tasks.create", { text: "too late" }), { code: "client_closed" });
  });
});
