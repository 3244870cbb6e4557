// Pure pieces of the client: query identity, URLs, argument checks.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";

import { ReactiveClient, canonicalJSON, queryToken, resolveUrl } from "django-reactive-queries";

test("canonical JSON sorts object keys at every depth and keeps array order", () => {
  assert.equal(canonicalJSON({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }), '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}');
  assert.equal(queryToken("chat.list_messages", { limit: 5, channel: 1 }), queryToken("chat.list_messages", { channel: 1, limit: 5 }));
  assert.notEqual(queryToken("a.b", { x: 1 }), queryToken("a.c", { x: 1 }));
  assert.equal(queryToken("a.b"), queryToken("a.b", {}));
  assert.equal(canonicalJSON({ skip: undefined, at: new Date(0) }), '{"at":"1970-01-01T00:00:00.000Z"}');
});

test("the WebSocket URL comes from the page when not given", () => {
  assert.equal(resolveUrl("ws://example.test:8000/reactive/ws/"), "ws://example.test:8000/reactive/ws/");
  assert.equal(resolveUrl("https://example.test/reactive/ws/"), "wss://example.test/reactive/ws/");
  assert.throws(() => resolveUrl(), /without a web page/);
  globalThis.location = new URL("https://example.test:8443/app/page?x=1");
  try {
    assert.equal(resolveUrl(), "wss://example.test:8443/reactive/ws/");
    assert.equal(resolveUrl("/custom/ws/"), "wss://example.test:8443/custom/ws/");
    globalThis.location = new URL("http://127.0.0.1:8000/");
    assert.equal(resolveUrl(), "ws://127.0.0.1:8000/reactive/ws/");
  } finally {
    delete globalThis.location;
  }
});

test("without a WebSocket implementation the client says what to pass", { skip: typeof globalThis.WebSocket === "function" }, () => {
  assert.throws(() => new ReactiveClient("ws://127.0.0.1:1/reactive/ws/"), /options\.WebSocket/);
});

test("paginatedQuery checks its options", () => {
  class NeverOpens {
    close() {}
  }
  const client = new ReactiveClient("ws://127.0.0.1:1/reactive/ws/", { WebSocket: NeverOpens });
  try {
    assert.throws(() => client.paginatedQuery("a.b", {}, { initialNumItems: 0 }, () => {}), /initialNumItems/);
    assert.throws(() => client.paginatedQuery("a.b", { pagination: {} }, { initialNumItems: 5 }, () => {}), /pagination/);
    assert.equal(client.connectionState().state, "connecting");
  } finally {
    client.close();
  }
});

test("the package exports its package.json, for tools that read its version", () => {
  const require = createRequire(import.meta.url);
  const path = require.resolve("django-reactive-queries/package.json");
  assert.equal(require(path).name, "django-reactive-queries");
});
