/**
 * The JavaScript client of django-reactive-queries: live queries, mutations with optimistic
 * updates, actions and pagination over one WebSocket (PROTOCOL.md, version 1).
 *
 *     import { ReactiveClient } from "/static/reactive/client.js";
 *     const client = new ReactiveClient(); // ws(s)://<this page's host>/reactive/ws/
 *     const stop = client.onUpdate("chat.list_messages", { channel: 1 }, (messages) => render(messages));
 *     await client.mutation("chat.send_message", { channel: 1, body: "Hello" });
 *
 * A plain ES module with no dependencies; `react.js` beside it adds React hooks. The pieces,
 * each in `internal/`: the socket manager (reconnects, heartbeat), the query set (one server
 * subscription per distinct query, reference counted), the request manager (mutations until
 * their result, replayed after a reconnect; actions), the optimistic layer (what is shown:
 * server values with pending optimistic updates on top) and paginated queries. This file wires
 * them to the wire protocol.
 */

import { canonicalJSON, queryToken } from "./internal/canonical.js";
import { ReactiveError } from "./internal/errors.js";
import { OptimisticLayer, isOptimistic, optimisticId, withOptimisticRow } from "./internal/optimistic_layer.js";
import { PaginatedQuery, PaginationStatus } from "./internal/paginated_query.js";
import { QuerySet, subscribeFrame } from "./internal/query_set.js";
import { RequestManager } from "./internal/request_manager.js";
import { DEFAULT_OPTIONS, SocketManager, backoffDelay } from "./internal/socket_manager.js";

export { canonicalJSON, queryToken, ReactiveError, PaginationStatus, backoffDelay, DEFAULT_OPTIONS };
export { isOptimistic, optimisticId, withOptimisticRow };

export const PROTOCOL_VERSION = 1;
export const CLIENT_NAME = "django-reactive-queries-js/0.1.0";
const DEFAULT_PATH = "/reactive/ws/";

export class ReactiveClient {
  /**
   * @param {string} [url]  the WebSocket URL; by default this page's origin with `/reactive/ws/`
   *   (`wss:` on an `https:` page). A path or an http(s) URL is turned into a ws(s) URL.
   * @param {object} [options]  `WebSocket` (constructor; Node 20 has none built in: pass the
   *   `ws` package's), `backoffBaseMs` (100), `backoffMaxMs` (16000), `heartbeatIntervalMs`
   *   (15000), `inactivityTimeoutMs` (45000), `sessionId`, `onError(error)` for server errors
   *   about no particular request.
   */
  constructor(url, options = {}) {
    if (url !== null && typeof url === "object") {
      options = url;
      url = undefined;
    }
    this.url = resolveUrl(url);
    this.sessionId = options.sessionId ?? newSessionId();
    this._onError = options.onError ?? ((error) => console.warn(`reactive: ${error.code}: ${error.message}`));
    this._queries = new QuerySet();
    this._layer = new OptimisticLayer();
    this._requests = new RequestManager();
    this._listeners = new Map(); // token -> Set of listeners
    this._connectionListeners = new Set();
    this._connection = { state: "connecting", retries: 0, hasInflightRequests: false };
    this._maxMessageBytes = options.maxMessageBytes ?? null;
    this._authToken = undefined;
    this._closed = false;
    this._welcomed = false; // the server answered `connect` on this connection
    this._replaying = new Set(); // mutations pending when this connection opened
    this._completed = new Set(); // mutations answered whose optimistic update still shows
    this._socket = new SocketManager(this.url, {
      WebSocket: options.WebSocket,
      backoffBaseMs: options.backoffBaseMs,
      backoffMaxMs: options.backoffMaxMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      inactivityTimeoutMs: options.inactivityTimeoutMs,
      random: options.random,
      onOpen: () => this._opened(),
      onFrame: (frame) => this._received(frame),
      onClose: () => this._dropped(),
      onStateChange: () => this._updateConnection(),
    });
    this._socket.start();
  }

  // Queries ----------------------------------------------------------------------------------

  /**
   * Subscribe to a query. `onValue(value)` runs with its current value (soon after this call
   * when another subscriber already has it) and again whenever it changes; `onError(error)`
   * when the query fails (the subscription stays live: a later change may bring a value).
   * Identical name and arguments share one server subscription. Returns `unsubscribe()`.
   */
  onUpdate(name, args, onValue, onError) {
    const token = queryToken(name, args);
    const listener = { onValue, onError, last: undefined };
    const unsubscribe = this._listen(name, args, listener);
    queueMicrotask(() => {
      if (listener.active) this._deliver(listener, this._layer.get(token));
    });
    return unsubscribe;
  }

  /** The query's value once: resolves with the first value, rejects with its error. */
  query(name, args) {
    return new Promise((resolve, reject) => {
      const unsubscribe = this.onUpdate(
        name,
        args,
        (value) => {
          unsubscribe();
          resolve(value);
        },
        (error) => {
          unsubscribe();
          reject(error);
        },
      );
    });
  }

  /**
   * For view layers (React's useSyncExternalStore): `subscribe(onChange)` keeps the query live
   * and calls `onChange()` on every change; `getSnapshot()` is the shown entry, `{value}`,
   * `{error}` or undefined while loading, the same object until the result changes.
   */
  watchQuery(name, args) {
    const token = queryToken(name, args);
    return {
      subscribe: (onChange) => this._listen(name, args, { onChange, last: undefined }),
      getSnapshot: () => this._layer.get(token),
    };
  }

  /**
   * A paginated query: pages of `name` (which takes a `pagination` argument), the first of
   * `initialNumItems` rows. `onChange({results, status, error?})` runs on every change; status
   * is `LoadingFirstPage`, `CanLoadMore`, `LoadingMore` or `Exhausted`.
   * Returns `{loadMore(numItems), unsubscribe()}`; `loadMore` returns false unless CanLoadMore.
   */
  paginatedQuery(name, args, options, onChange, onError) {
    const query = new PaginatedQuery(
      (pageName, pageArgs, onValue, onPageError) => this.onUpdate(pageName, pageArgs, onValue, onPageError),
      name,
      args,
      options,
      onChange,
      onError,
    );
    return {
      loadMore: (numItems) => query.loadMore(numItems),
      unsubscribe: () => query.unsubscribe(),
      getState: () => query.state,
    };
  }

  // Requests ---------------------------------------------------------------------------------

  /**
   * Run a mutation. Resolves with its value once the server has sent every update its commit
   * caused to this client's queries (PROTOCOL.md guarantee 6); rejects with a ReactiveError
   * (`code`, `message`, `data`). Survives reconnects: it is sent again and runs at most once.
   *
   * `optimisticUpdate(localStore, args)` changes what queries show at once, through
   * `localStore.getQuery(name, args)` and `localStore.setQuery(name, args, value)`. It runs
   * again on top of every newer server value until the result arrives, then disappears (at once
   * if the mutation fails). Set states rather than toggle: see internal/optimistic_layer.js.
   */
  mutation(name, args, options) {
    const request = this._requests.create("mutation", name, args);
    const update = options?.optimisticUpdate;
    if (this._closed) {
      this._failRequest(request.requestId, closedError());
      return request.promise;
    }
    if (update) this._notify(this._layer.apply(request.requestId, update, request.frame.args));
    this._sendRequest(request);
    this._updateConnection();
    return request.promise;
  }

  /**
   * Run an action. Never sent twice: if the connection drops while it runs, the promise
   * rejects with code `connection_lost`. One made while disconnected is sent on reconnect.
   */
  action(name, args) {
    const request = this._requests.create("action", name, args);
    if (this._closed) {
      this._failRequest(request.requestId, closedError());
      return request.promise;
    }
    this._sendRequest(request);
    this._updateConnection();
    return request.promise;
  }

  /** Switch identity with a token (null signs out); sent again after every reconnect. */
  authenticate(token) {
    this._authToken = token ?? null;
    this._send({ type: "authenticate", token: this._authToken });
  }

  // Connection -------------------------------------------------------------------------------

  /** `{state: "connecting"|"connected"|"disconnected", retries, hasInflightRequests}`; the
   * same object until something in it changes. */
  connectionState() {
    return this._connection;
  }

  /** `callback(state)` on every change of connectionState(). Returns `unsubscribe()`. */
  onConnectionChange(callback) {
    this._connectionListeners.add(callback);
    return () => this._connectionListeners.delete(callback);
  }

  /** Reconnect now, without waiting out the backoff (or replacing an open socket). */
  reconnectNow() {
    this._socket.reconnectNow();
  }

  /** Close the socket for good; pending mutations and actions fail with `client_closed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._socket.stop();
    for (const request of [...this._requests.requests.values()]) this._failRequest(request.requestId, closedError());
    this._updateConnection();
  }

  // Internals: subscriptions -------------------------------------------------------------------

  _listen(name, args, listener) {
    const { query, isNew } = this._queries.add(name, args);
    const token = query.token;
    let listeners = this._listeners.get(token);
    if (listeners === undefined) this._listeners.set(token, (listeners = new Set()));
    listeners.add(listener);
    listener.active = true;
    if (isNew) this._sendSubscribe(query);
    return () => {
      if (!listener.active) return;
      listener.active = false;
      listeners.delete(listener);
      if (listeners.size === 0 && this._listeners.get(token) === listeners) this._listeners.delete(token);
      const ended = this._queries.remove(token);
      if (ended !== undefined) {
        this._send({ type: "unsubscribe", id: ended.id });
        this._layer.forget(token);
        // The query no one waits for any more may have been holding back completed updates.
        this._notify(this._dropCompletedUpdates());
        this._checkSynced();
      }
    };
  }

  _sendSubscribe(query) {
    const { error } = this._send(subscribeFrame(query));
    // Answered later, so that no listener hears of it before its subscribe call returned.
    if (error) queueMicrotask(() => this._queries.get(query.id) === query && this._answer(query, { error }));
  }

  _answer(query, entry) {
    query.answered = true;
    const changed = this._layer.ingest(new Map([[query.token, entry]]));
    for (const token of this._dropCompletedUpdates()) changed.add(token);
    this._notify(changed);
    this._checkSynced();
  }

  /** Listeners of the changed queries, in one pass after the whole state is updated. */
  _notify(changed) {
    for (const token of changed) {
      const listeners = this._listeners.get(token);
      if (listeners === undefined) continue;
      const entry = this._layer.get(token);
      for (const listener of [...listeners]) if (listener.active) this._deliver(listener, entry);
    }
  }

  _deliver(listener, entry) {
    if (entry === listener.last) return;
    listener.last = entry;
    try {
      if (listener.onChange) listener.onChange();
      else if (entry === undefined) return;
      else if ("error" in entry) {
        if (listener.onError) listener.onError(entry.error);
        else this._onError(entry.error);
      } else listener.onValue?.(entry.value);
    } catch (error) {
      // One failing listener must not keep the others from their update.
      console.error("reactive: a query listener threw:", error);
    }
  }

  // Internals: requests --------------------------------------------------------------------------

  _sendRequest(request) {
    const { sent, error } = this._send(request.frame);
    if (error) this._failRequest(request.requestId, error);
    else request.sent = sent;
  }

  _failRequest(requestId, error) {
    const request = this._requests.fail(requestId, error);
    if (request === undefined) return;
    this._settled(request, false);
  }

  /** After a request's promise settled: its optimistic update goes (or waits, see below). */
  _settled(request, ok) {
    this._replaying.delete(request.requestId);
    if (this._layer.has(request.requestId)) {
      if (ok && !this._queries.allAnswered()) {
        // Some query has not had its value since (re)subscribing, and that value may predate
        // this mutation: keep showing the update until every query has answered.
        this._completed.add(request.requestId);
      } else {
        this._notify(this._layer.remove(request.requestId));
      }
    }
    this._updateConnection();
    this._checkSynced();
  }

  _dropCompletedUpdates() {
    const changed = new Set();
    if (this._completed.size === 0 || !this._queries.allAnswered()) return changed;
    for (const requestId of this._completed) for (const token of this._layer.remove(requestId)) changed.add(token);
    this._completed.clear();
    return changed;
  }

  // Internals: the wire ------------------------------------------------------------------------

  /** Send a frame if connected (else it goes out on the next open): `{sent}`, or `{error}`
   * for a frame the server would refuse as too large. */
  _send(frame) {
    const text = JSON.stringify(frame);
    const limit = this._maxMessageBytes;
    if (limit !== null && text.length > limit / 3) {
      const size = new TextEncoder().encode(text).length;
      if (size > limit) return { sent: false, error: new ReactiveError("too_large", `Frame of ${size} bytes exceeds ${limit}.`) };
    }
    return { sent: this._socket.send(text) };
  }

  _opened() {
    this._welcomed = false;
    this._send({ type: "connect", protocol: PROTOCOL_VERSION, session_id: this.sessionId, client: CLIENT_NAME });
    if (this._authToken !== undefined) this._send({ type: "authenticate", token: this._authToken });
    this._queries.markUnanswered();
    for (const query of [...this._queries.all()]) this._sendSubscribe(query);
    this._replaying = new Set(this._requests.pendingMutations().map((request) => request.requestId));
    for (const request of this._requests.unsent()) this._sendRequest(request);
  }

  _dropped() {
    this._welcomed = false;
    this._queries.markUnanswered();
    this._requests.disconnected();
    this._updateConnection();
  }

  _received(frame) {
    switch (frame?.type) {
      case "transition":
        return this._transition(frame);
      case "mutation_result":
      case "action_result": {
        const request = this._requests.settle(frame);
        if (request !== undefined) this._settled(request, frame.ok);
        return;
      }
      case "error":
        return this._errorFrame(frame);
      case "connected":
        this._welcomed = true;
        this._maxMessageBytes = frame.limits?.max_message_bytes ?? this._maxMessageBytes;
        this._checkSynced();
        return;
      default:
        return; // `pong`, and frame types of later protocol versions
    }
  }

  _transition(frame) {
    const results = new Map();
    for (const update of frame.updates ?? []) {
      const query = this._queries.get(update.id);
      if (query === undefined) continue; // ended since; its last frames may still arrive
      query.answered = true;
      results.set(query.token, "error" in update ? { error: ReactiveError.from(update.error) } : { value: update.value });
    }
    const changed = this._layer.ingest(results);
    for (const token of this._dropCompletedUpdates()) changed.add(token);
    this._notify(changed);
    this._checkSynced();
  }

  _errorFrame(frame) {
    const error = ReactiveError.from(frame.error);
    if (frame.id !== undefined && frame.id !== null) {
      const query = this._queries.get(frame.id);
      if (query !== undefined) this._answer(query, { error });
    } else if (frame.request_id !== undefined && frame.request_id !== null) {
      this._failRequest(frame.request_id, error);
    } else {
      this._onError(error);
    }
  }

  /** Back off from zero again once everything from before the reconnect is synced. */
  _checkSynced() {
    if (this._socket.retries === 0 || !this._welcomed) return;
    if (this._replaying.size === 0 && this._queries.allAnswered()) this._socket.resetRetries();
  }

  _updateConnection() {
    const next = {
      state: this._closed ? "disconnected" : this._socket.state,
      retries: this._socket.retries,
      hasInflightRequests: this._requests.size > 0,
    };
    const current = this._connection;
    if (
      next.state === current.state &&
      next.retries === current.retries &&
      next.hasInflightRequests === current.hasInflightRequests
    ) {
      return;
    }
    this._connection = next;
    for (const callback of [...this._connectionListeners]) {
      try {
        callback(next);
      } catch (error) {
        console.error("reactive: a connection listener threw:", error);
      }
    }
  }
}

function closedError() {
  return new ReactiveError("client_closed", "The client was closed.");
}

/** The WebSocket URL: as given, or derived from the page's location. */
export function resolveUrl(url) {
  if (url === undefined || url === null || url === "") url = DEFAULT_PATH;
  if (/^wss?:\/\//i.test(url)) return url;
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
  const location = globalThis.location;
  if (location === undefined || !/^https?:$/.test(location.protocol)) {
    throw new TypeError(`Cannot resolve the WebSocket URL ${JSON.stringify(url)} without a web page: pass a ws:// URL.`);
  }
  const resolved = new URL(url, location.href);
  resolved.protocol = resolved.protocol === "https:" ? "wss:" : "ws:";
  return resolved.href;
}

function newSessionId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
