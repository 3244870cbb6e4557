// Reconnecting: backoff timing, heartbeat, the `online` event, and what is sent again.

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { WebSocket } from "ws";

import { DEFAULT_OPTIONS, ReactiveClient, backoffDelay } from "django-reactive-queries";

import { scriptedServer } from "../testing/scripted_server.mjs";
import { Recorder, waitFor } from "../testing/wait.mjs";

const cleanups = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

async function setup(options = {}, serverOptions = {}) {
  const server = await scriptedServer(serverOptions);
  const client = new ReactiveClient(server.url, { WebSocket, ...options });
  cleanups.push(() => server.close(), () => client.close());
  return { server, client };
}

describe("backoff", () => {
  test("the wait starts near 100 ms, doubles per attempt and never exceeds 16 s", () => {
    assert.equal(DEFAULT_OPTIONS.backoffBaseMs, 100);
    assert.equal(DEFAULT_OPTIONS.backoffMaxMs, 16000);
    const upper = (retries) => backoffDelay(retries, undefined, undefined, () => 1);
    const lower = (retries) => backoffDelay(retries, undefined, undefined, () => 0);
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 8].map(upper), [100, 200, 400, 800, 1600, 3200, 6400, 12800, 16000]);
    assert.deepEqual([0, 1, 2].map(lower), [50, 100, 200]);
    assert.equal(upper(1000), 16000);
    for (let i = 0; i < 1000; i++) {
      const retries = i % 12;
      const delay = backoffDelay(retries);
      assert.ok(delay >= Math.min(16000, 100 * 2 ** retries) / 2 && delay <= Math.min(16000, 100 * 2 ** retries));
    }
  });

  test("attempts against a failing server are spaced by the backoff", async () => {
    const { server, client } = await setup({ backoffBaseMs: 20, backoffMaxMs: 160, random: () => 1 });
    server.rejecting = true;
    await waitFor(() => server.acceptedAt.length >= 7, { timeout: 10000 });
    const gaps = server.acceptedAt.slice(1, 7).map((time, index) => time - server.acceptedAt[index]);
    const expected = [20, 40, 80, 160, 160, 160];
    gaps.forEach((gap, index) => assert.ok(gap >= expected[index] - 2, `gap ${index} was ${gap} ms, below ${expected[index]}`));
    // Each socket opened for a moment, but the client never synced: the count kept growing.
    assert.ok(client.connectionState().retries >= 6);
  });

  test("retries go back to zero once the client has synced after a reconnect", async () => {
    const { server, client } = await setup({ backoffBaseMs: 10, backoffMaxMs: 40 });
    server.rejecting = true;
    const shown = new Recorder();
    client.onUpdate("things.list", {}, shown.callback);
    await waitFor(() => client.connectionState().retries >= 3);
    server.rejecting = false;
    const connection = await server.connection(0);
    const subscribe = await connection.frame((frame) => frame.type === "subscribe");
    assert.ok(client.connectionState().retries >= 3, "not yet: the query has no value yet");
    connection.send({ type: "transition", version: 1, updates: [{ id: subscribe.id, value: ["a"] }] });
    await shown.next();
    assert.deepEqual(client.connectionState(), { state: "connected", retries: 0, hasInflightRequests: false });
  });

  test("reconnectNow() skips the backoff wait", async () => {
    const { server, client } = await setup({ backoffBaseMs: 60000, backoffMaxMs: 60000 });
    const first = await server.connection(0);
    first.drop();
    await waitFor(() => client.connectionState().state === "disconnected");
    client.reconnectNow();
    await server.connection(1, 2000);
    await waitFor(() => client.connectionState().state === "connected");
  });

  test("the browser's online event reconnects at once", async () => {
    globalThis.window = new EventTarget();
    cleanups.push(() => delete globalThis.window);
    const { server, client } = await setup({ backoffBaseMs: 60000, backoffMaxMs: 60000 });
    (await server.connection(0)).drop();
    await waitFor(() => client.connectionState().state === "disconnected");
    globalThis.window.dispatchEvent(new Event("online"));
    await server.connection(1, 2000);
  });
});

describe("heartbeat", () => {
  test("a ping goes out every heartbeat interval and the pongs keep the socket open", async () => {
    const { server, client } = await setup({ heartbeatIntervalMs: 30, inactivityTimeoutMs: 300 });
    const connection = await server.connection(0);
    await waitFor(() => connection.ofType("ping").length >= 5, { timeout: 3000 });
    assert.equal(server.connections.length, 1);
    assert.equal(client.connectionState().state, "connected");
  });

  test("a server that goes silent is left after the inactivity timeout, and the client reconnects", async () => {
    const { server, client } = await setup(
      { heartbeatIntervalMs: 20, inactivityTimeoutMs: 150, backoffBaseMs: 10 },
      { autoPong: false },
    );
    const states = new Recorder();
    client.onConnectionChange(states.callback);
    const first = await server.connection(0);
    await server.connection(1, 3000);
    // Accept times are taken by the server as they happen: the client's last frame came after
    // the first, and the drop at least the timeout after that.
    const [acceptedFirst, acceptedSecond] = server.acceptedAt;
    assert.ok(acceptedSecond - acceptedFirst >= 148, `reconnected after ${acceptedSecond - acceptedFirst} ms`);
    assert.ok(first.ofType("ping").length >= 2);
    await states.next((state) => state.state === "disconnected");
  });
});

describe("resync", () => {
  test("a reconnect sends connect, every live query with its id, and the unanswered mutations in order", async () => {
    const { server, client } = await setup({ backoffBaseMs: 10 });
    const first = await server.connection(0);
    const a = new Recorder();
    const b = new Recorder();
    client.onUpdate("notes.list", { folder: 1 }, a.callback);
    client.onUpdate("notes.count", {}, b.callback);
    const stopped = client.onUpdate("notes.gone", {}, () => {});
    stopped();
    const one = client.mutation("notes.add", { text: "one" });
    const two = client.mutation("notes.add", { text: "two" });
    await first.frame((frame) => frame.type === "mutation" && frame.request_id === 2);
    const [m1, m2] = first.ofType("mutation");
    first.send({ type: "mutation_result", request_id: m1.request_id, ok: true, value: 1, version: 1 });
    assert.equal(await one, 1);
    first.drop();

    const second = await server.connection(1);
    await second.frame((frame) => frame.type === "mutation");
    const [connectFrame, ...rest] = second.frames;
    assert.deepEqual(connectFrame, {
      type: "connect",
      protocol: 1,
      session_id: client.sessionId,
      client: connectFrame.client,
    });
    assert.deepEqual(rest, [
      first.ofType("subscribe")[0],
      first.ofType("subscribe")[1],
      m2,
    ]);
    assert.equal(client.connectionState().hasInflightRequests, true);
    second.send({ type: "mutation_result", request_id: m2.request_id, ok: true, value: 2, version: 2 });
    assert.equal(await two, 2);
  });

  test("an action made while disconnected is sent on the next connection; one in flight fails", async () => {
    const { server, client } = await setup({ backoffBaseMs: 50, backoffMaxMs: 50 });
    const first = await server.connection(0);
    await waitFor(() => client.connectionState().state === "connected");
    const inFlight = client.action("jobs.run", {});
    await first.frame((frame) => frame.type === "action");
    first.drop();
    await assert.rejects(inFlight, { code: "connection_lost", name: "ReactiveError" });
    assert.notEqual(client.connectionState().state, "connected");
    const later = client.action("jobs.run", { n: 2 });
    const second = await server.connection(1);
    const action = await second.frame((frame) => frame.type === "action");
    assert.deepEqual(action.args, { n: 2 });
    assert.equal(second.ofType("action").length, 1, "the failed action is not sent again");
    second.send({ type: "action_result", request_id: action.request_id, ok: true, value: "ran" });
    assert.equal(await later, "ran");
  });

  test("errors about no request go to options.onError; late frames of ended queries are ignored", async () => {
    const errors = new Recorder();
    const { server, client } = await setup({ onError: errors.callback });
    const connection = await server.connection(0);
    const shown = new Recorder();
    const stop = client.onUpdate("x.y", {}, shown.callback);
    const subscribe = await connection.frame((frame) => frame.type === "subscribe");
    stop();
    connection.send({ type: "transition", version: 1, updates: [{ id: subscribe.id, value: 1 }] });
    connection.send({ type: "error", error: { code: "rate_limited", message: "Slow down." } });
    const error = await errors.next();
    assert.deepEqual([error.code, error.message], ["rate_limited", "Slow down."]);
    assert.equal(shown.values.length, 0);
  });
});
