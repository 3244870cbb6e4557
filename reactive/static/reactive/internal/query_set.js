/**
 * The query set: every query this client has live, by identity (name + canonical arguments),
 * reference counted. Only the first subscriber makes the client send `subscribe`, and only the
 * last unsubscribe sends `unsubscribe`. Each query keeps one id for as long as it lives, so a
 * resubscription after a reconnect uses the same id; a query subscribed again after it ended
 * gets a new id, so a late frame for the old one can never be taken for the new one.
 */

import { queryToken } from "./canonical.js";

export class QuerySet {
  constructor() {
    this.nextId = 1;
    this.byToken = new Map();
    this.byId = new Map();
  }

  /** Add a subscriber; returns the query and whether it is new (so must be sent). */
  add(name, args) {
    const token = queryToken(name, args);
    let query = this.byToken.get(token);
    const isNew = query === undefined;
    if (isNew) {
      query = { id: this.nextId++, token, name, args: args ?? {}, refs: 0, answered: false };
      this.byToken.set(token, query);
      this.byId.set(query.id, query);
    }
    query.refs += 1;
    return { query, isNew };
  }

  /** Remove a subscriber; returns the query when it was the last one (so must be ended). */
  remove(token) {
    const query = this.byToken.get(token);
    if (query === undefined) return undefined;
    query.refs -= 1;
    if (query.refs > 0) return undefined;
    this.byToken.delete(token);
    this.byId.delete(query.id);
    return query;
  }

  get(id) {
    return this.byId.get(id);
  }

  all() {
    return this.byToken.values();
  }

  get size() {
    return this.byToken.size;
  }

  /** The socket dropped: every query waits for its value again from the next connection. */
  markUnanswered() {
    for (const query of this.byToken.values()) query.answered = false;
  }

  /** Whether every live query has had an answer (value or error) on this connection. */
  allAnswered() {
    for (const query of this.byToken.values()) if (!query.answered) return false;
    return true;
  }
}

/** The `subscribe` frame of a query. */
export function subscribeFrame(query) {
  return { type: "subscribe", id: query.id, query: query.name, args: query.args };
}
