/**
 * The optimistic layer: what the client shows is the server's latest results with every
 * pending optimistic update applied on top, in the order the mutations were made.
 *
 * An entry is `{value}` or `{error}` and keeps its identity until that query's result changes,
 * so listeners (and React's useSyncExternalStore) can tell changes by reference. Whenever the
 * server results or the set of pending updates change, the view is rebuilt: a copy of the
 * server results, then each pending update run again against it. The methods return the
 * tokens whose entry changed, for the client to notify in one pass.
 *
 * Updates run again on every newer server value until their mutation's result arrives, and
 * the server's value may already include the mutation's own commit before its result arrives
 * (PROTOCOL.md guarantee 6 orders the result after the transitions). So an update should set
 * a state (`completed: true`, remove the row with this id), not flip or append blindly.
 */

import { queryToken } from "./canonical.js";

export class OptimisticLayer {
  constructor({ onUpdateError } = {}) {
    this.server = new Map(); // token -> entry, as the server last sent it
    this.view = new Map(); // token -> entry, what the client shows
    this.updates = []; // [{id, update, args}], oldest first
    this.onUpdateError = onUpdateError ?? ((error) => console.error("Optimistic update failed:", error));
  }

  /** The shown entry of a query: `{value}`, `{error}`, or undefined while loading. */
  get(token) {
    return this.view.get(token);
  }

  /** New server results (`Map token -> entry`). */
  ingest(results) {
    for (const [token, entry] of results) this.server.set(token, entry);
    if (this.updates.length === 0) {
      const changed = new Set();
      for (const [token, entry] of results) {
        if (this.view.get(token) !== entry) {
          this.view.set(token, entry);
          changed.add(token);
        }
      }
      return changed;
    }
    return this.rebuild();
  }

  /** Add the optimistic update of mutation `id` and show its effect. */
  apply(id, update, args) {
    this.updates.push({ id, update, args });
    return this.rebuild();
  }

  /** Drop the update of mutation `id` (its result arrived, or it failed). */
  remove(id) {
    const index = this.updates.findIndex((entry) => entry.id === id);
    if (index === -1) return new Set();
    this.updates.splice(index, 1);
    return this.rebuild();
  }

  has(id) {
    return this.updates.some((entry) => entry.id === id);
  }

  /** A query ended: forget its results. */
  forget(token) {
    this.server.delete(token);
    this.view.delete(token);
  }

  rebuild() {
    const next = new Map(this.server);
    const store = {
      getQuery(name, args) {
        const entry = next.get(queryToken(name, args));
        return entry === undefined || "error" in entry ? undefined : entry.value;
      },
      setQuery(name, args, value) {
        const token = queryToken(name, args);
        // Setting undefined shows the query as loading, as in Convex.
        if (value === undefined) next.delete(token);
        else next.set(token, { value });
      },
    };
    for (const { update, args } of this.updates) {
      try {
        update(store, args);
      } catch (error) {
        this.onUpdateError(error);
      }
    }
    const changed = new Set();
    for (const [token, entry] of next) if (this.view.get(token) !== entry) changed.add(token);
    for (const token of this.view.keys()) if (!next.has(token)) changed.add(token);
    this.view = next;
    return changed;
  }
}

// Optimistic creates. A created row shows at once with a temporary id, and steps aside when the
// server's value holds the real row: the update runs again on each server value until the
// mutation's result arrives, and the server's value arrives first (guarantee 6), so an update
// that appends blindly would show the row twice for a moment. The client chooses a key the
// mutation stores; the update adds its row only while no row of the server's has that key.

const OPTIMISTIC_PREFIX = "optimistic:";

/** A new temporary id, recognisable by `isOptimistic`: `"optimistic:<random>"`. */
export function optimisticId() {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return OPTIMISTIC_PREFIX + random;
}

/** Whether `id` was made by `optimisticId` (a row the server has not confirmed yet). */
export function isOptimistic(id) {
  return typeof id === "string" && id.startsWith(OPTIMISTIC_PREFIX);
}

/**
 * `rows` with `row` added (at the end, or the start with `{ at: "start" }`), unless a row with
 * the same value of `key` is already there: once the server's value holds the created row, that
 * row shows alone. Returns a new array, or `rows` itself when nothing is added.
 */
export function withOptimisticRow(rows, row, key, { at = "end" } = {}) {
  if (rows.some((existing) => existing[key] === row[key])) return rows;
  return at === "start" ? [row, ...rows] : [...rows, row];
}
