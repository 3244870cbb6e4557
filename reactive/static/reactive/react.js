/**
 * React hooks over client.js: a thin layer, all state lives in the ReactiveClient.
 *
 *     const client = new ReactiveClient();
 *     root.render(<ReactiveProvider client={client}><App /></ReactiveProvider>);
 *
 *     function Messages({ channel }) {
 *       const messages = useQuery("chat.list_messages", { channel }); // undefined while loading
 *       const send = useMutation("chat.send_message");
 *       ...
 *     }
 *
 * This module imports React as the bare specifier "react": use it through a bundler (or an
 * import map). A plain page without a build step uses client.js alone.
 *
 * Hooks read the client through useSyncExternalStore, and arguments are compared by their
 * canonical JSON, so a new object with the same content never resubscribes.
 */

import { createContext, createElement, useCallback, useContext, useMemo, useSyncExternalStore } from "react";

import { canonicalJSON } from "./client.js";

const ClientContext = createContext(null);

/** Makes `client` available to the hooks below it. */
export function ReactiveProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/** The ReactiveClient of the nearest ReactiveProvider. */
export function useReactiveClient() {
  const client = useContext(ClientContext);
  if (client === null) {
    throw new Error("django-reactive-queries: hooks must be used inside <ReactiveProvider client={...}>.");
  }
  return client;
}

const noSubscription = () => () => {};
const nothing = () => undefined;

/** Memoize arguments by content: the same object for as long as the canonical JSON is equal. */
function useStableArgs(args) {
  const key = args === "skip" ? "skip" : canonicalJSON(args ?? {});
  // eslint-disable-next-line react-hooks/exhaustive-deps
  return useMemo(() => (args === "skip" ? "skip" : args ?? {}), [key]);
}

/**
 * The live value of a query: undefined while loading, then every new value. A failing query
 * throws its ReactiveError to the nearest error boundary. Pass "skip" as args to not run it.
 */
export function useQuery(name, args) {
  const client = useReactiveClient();
  const stableArgs = useStableArgs(args);
  const watch = useMemo(
    () => (stableArgs === "skip" ? null : client.watchQuery(name, stableArgs)),
    [client, name, stableArgs],
  );
  const entry = useSyncExternalStore(
    watch ? watch.subscribe : noSubscription,
    watch ? watch.getSnapshot : nothing,
    nothing,
  );
  if (entry !== undefined && "error" in entry) throw entry.error;
  return entry?.value;
}

function bindMutation(client, name, optimisticUpdate) {
  const mutate = (args) => client.mutation(name, args ?? {}, optimisticUpdate ? { optimisticUpdate } : undefined);
  mutate.withOptimisticUpdate = (update) => {
    if (optimisticUpdate) throw new Error(`${name} already has an optimistic update.`);
    return bindMutation(client, name, update);
  };
  return mutate;
}

/**
 * A function that runs the mutation: `(args) => Promise`. `.withOptimisticUpdate(fn)` gives one
 * whose `fn(localStore, args)` changes what queries show until the result arrives.
 */
export function useMutation(name) {
  const client = useReactiveClient();
  return useMemo(() => bindMutation(client, name, undefined), [client, name]);
}

/** A function that runs the action: `(args) => Promise`. */
export function useAction(name) {
  const client = useReactiveClient();
  return useCallback((args) => client.action(name, args ?? {}), [client, name]);
}

const SKIPPED = Object.freeze({ results: Object.freeze([]), status: "LoadingFirstPage", loadMore: () => false });

/** A store over one client.paginatedQuery, started by its first subscriber. */
function paginatedStore(client, name, args, initialNumItems) {
  let handle = null;
  const listeners = new Set();
  const loadMore = (numItems) => (handle ? handle.loadMore(numItems) : false);
  const initial = { results: [], status: "LoadingFirstPage", loadMore };
  let snapshot = initial;
  return {
    subscribe(onChange) {
      listeners.add(onChange);
      if (handle === null) {
        handle = client.paginatedQuery(name, args, { initialNumItems }, (state) => {
          snapshot = { ...state, loadMore };
          for (const listener of [...listeners]) listener();
        });
      }
      return () => {
        listeners.delete(onChange);
        if (listeners.size === 0 && handle !== null) {
          handle.unsubscribe();
          handle = null;
          snapshot = initial;
        }
      };
    },
    getSnapshot: () => snapshot,
  };
}

/**
 * A paginated query: `{results, status, loadMore(numItems)}`, status being `LoadingFirstPage`,
 * `CanLoadMore`, `LoadingMore` or `Exhausted`. The query takes a `pagination` argument, which
 * the client fills in. A failing page throws its error to the nearest error boundary.
 */
export function usePaginatedQuery(name, args, { initialNumItems }) {
  const client = useReactiveClient();
  const stableArgs = useStableArgs(args);
  const store = useMemo(
    () => (stableArgs === "skip" ? null : paginatedStore(client, name, stableArgs, initialNumItems)),
    [client, name, stableArgs, initialNumItems],
  );
  const state = useSyncExternalStore(
    store ? store.subscribe : noSubscription,
    store ? store.getSnapshot : () => SKIPPED,
    () => SKIPPED,
  );
  if (state.error !== undefined) throw state.error;
  return state;
}

/** The client's connectionState(): `{state, retries, hasInflightRequests}`, live. */
export function useConnectionState() {
  const client = useReactiveClient();
  const subscribe = useCallback((onChange) => client.onConnectionChange(onChange), [client]);
  const getSnapshot = useCallback(() => client.connectionState(), [client]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}
