/**
 * The request manager: mutations and actions from the call until their result.
 *
 * Request ids are unique for the client's session. A mutation stays here until its
 * `mutation_result` arrives, across reconnects: after one it is sent again with the same
 * `request_id`, and the server, knowing the session, returns the stored result instead of
 * running it twice (PROTOCOL.md guarantee 7). An action is never sent twice: one in flight
 * when the socket drops fails with `connection_lost`; one made while disconnected waits and is
 * sent on the next connection.
 */

import { ReactiveError } from "./errors.js";

export class RequestManager {
  constructor() {
    this.nextRequestId = 1;
    this.requests = new Map(); // request_id -> request, in the order made
  }

  /** Register a request; returns it with its promise. It is sent by the caller. */
  create(kind, name, args) {
    const requestId = this.nextRequestId++;
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const request = {
      kind,
      requestId,
      frame: { type: kind, request_id: requestId, name, args: args ?? {} },
      sent: false,
      resolve,
      reject,
      promise,
    };
    this.requests.set(requestId, request);
    return request;
  }

  get(requestId) {
    return this.requests.get(requestId);
  }

  /** Settle a request from its result frame; returns it, or undefined for an unknown id. */
  settle(frame) {
    const request = this.requests.get(frame.request_id);
    if (request === undefined || `${request.kind}_result` !== frame.type) return undefined;
    this.requests.delete(request.requestId);
    if (frame.ok) request.resolve(frame.value);
    else request.reject(ReactiveError.from(frame.error));
    return request;
  }

  /** Fail a request (an `error` frame about it, a frame too large to send, close()). */
  fail(requestId, error) {
    const request = this.requests.get(requestId);
    if (request === undefined) return undefined;
    this.requests.delete(requestId);
    request.reject(error);
    return request;
  }

  /** The socket dropped: fail the actions it carried; mutations wait to be sent again. */
  disconnected() {
    const failed = [];
    for (const request of [...this.requests.values()]) {
      if (request.kind === "action" && request.sent) {
        failed.push(request);
        this.fail(
          request.requestId,
          new ReactiveError("connection_lost", "The connection was lost while the action ran; actions are never retried."),
        );
      } else {
        request.sent = false;
      }
    }
    return failed;
  }

  /** Requests not yet sent on the current connection, oldest first. */
  unsent() {
    return [...this.requests.values()].filter((request) => !request.sent);
  }

  /** Mutations still waiting for their result. */
  pendingMutations() {
    return [...this.requests.values()].filter((request) => request.kind === "mutation");
  }

  get size() {
    return this.requests.size;
  }

  /** The client is closing: fail everything. */
  failAll(error) {
    for (const requestId of [...this.requests.keys()]) this.fail(requestId, error);
  }
}
