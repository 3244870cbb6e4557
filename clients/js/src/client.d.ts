// Types of client.js: the django-reactive-queries JavaScript client (PROTOCOL.md, version 1).

export declare const PROTOCOL_VERSION: 1;
export declare const CLIENT_NAME: string;

/** Timings used when an option is not given. */
export declare const DEFAULT_OPTIONS: Readonly<{
  backoffBaseMs: number;
  backoffMaxMs: number;
  heartbeatIntervalMs: number;
  inactivityTimeoutMs: number;
}>;

/** Function arguments: always a JSON object. */
export type Args = Record<string, unknown>;

/** An error from the server (or the client: `connection_lost`, `client_closed`, `too_large`). */
export declare class ReactiveError extends Error {
  constructor(code: string, message?: string, data?: unknown);
  name: "ReactiveError";
  /** `bad_message`, `not_found`, `invalid_args`, `unauthenticated`, `forbidden`, `user_error`,
   * `server_error`, `too_large`, `limit_exceeded`, `rate_limited`, `connection_lost`, `client_closed`. */
  code: string;
  /** Field errors for `invalid_args` (field -> messages), or the payload of a `ReactiveError`. */
  data?: unknown;
  static from(error: { code: string; message?: string; data?: unknown }): ReactiveError;
}

export interface ConnectionState {
  state: "connecting" | "connected" | "disconnected";
  /** Reconnect attempts since the client last synced; 0 while all is well. */
  retries: number;
  /** Whether a mutation or action is waiting for its result. */
  hasInflightRequests: boolean;
}

/** What the client uses of a WebSocket: the browser's, or Node's `ws` package's. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export interface ReactiveClientOptions {
  /** A WebSocket constructor; defaults to `globalThis.WebSocket` (Node 20: pass `ws`'s). */
  WebSocket?: new (url: string) => WebSocketLike;
  /** First reconnect wait, before jitter (100 ms). Each failed attempt doubles it. */
  backoffBaseMs?: number;
  /** Longest reconnect wait (16 000 ms). Jitter scales each wait by a factor in [0.5, 1]. */
  backoffMaxMs?: number;
  /** How often a `ping` is sent on an open socket (15 000 ms). */
  heartbeatIntervalMs?: number;
  /** Reconnect when nothing arrived for this long (45 000 ms). */
  inactivityTimeoutMs?: number;
  /** The `session_id` sent in `connect` (random by default; 8 to 64 characters). */
  sessionId?: string;
  /** Refuse frames larger than this before the server announces its limit. */
  maxMessageBytes?: number;
  /** Server errors about no particular request (default: console.warn). */
  onError?: (error: ReactiveError) => void;
  /** Random numbers in [0, 1) for the backoff jitter (tests). */
  random?: () => number;
}

/** What an optimistic update reads and writes. */
export interface OptimisticLocalStore {
  /** The query's shown value (with earlier updates applied), or undefined if not loaded.
   * Name its type: `getQuery<Task[]>("tasks.list", {})`. */
  getQuery<T = unknown>(name: string, args?: Args): T | undefined;
  /** Show `value` for the query until the mutation's result arrives (undefined: loading). */
  setQuery<T = unknown>(name: string, args: Args | undefined, value: T | undefined): void;
}

export type OptimisticUpdate<A extends Args = Args> = (localStore: OptimisticLocalStore, args: A) => void;

export interface MutationOptions<A extends Args = Args> {
  optimisticUpdate?: OptimisticUpdate<A>;
}

export type PaginationStatusName = "LoadingFirstPage" | "CanLoadMore" | "LoadingMore" | "Exhausted";

export declare const PaginationStatus: Readonly<{ [K in PaginationStatusName]: K }>;

export interface PaginatedState<T = any> {
  results: T[];
  status: PaginationStatusName;
  /** The error of a page, while one has failed. */
  error?: ReactiveError;
}

export interface PaginatedQueryHandle<T = any> {
  /** Ask for `numItems` more rows; false (nothing happens) unless the status is CanLoadMore. */
  loadMore(numItems: number): boolean;
  unsubscribe(): void;
  getState(): PaginatedState<T>;
}

/** A query entry as shown: a value, an error, or undefined while loading. */
export type QueryEntry<T = any> = { value: T } | { error: ReactiveError } | undefined;

export interface QueryWatch<T = any> {
  subscribe(onChange: () => void): () => void;
  getSnapshot(): QueryEntry<T>;
}

export declare class ReactiveClient {
  /** @param url the WebSocket URL; default: this page's origin with `/reactive/ws/`. */
  constructor(url?: string, options?: ReactiveClientOptions);
  constructor(options: ReactiveClientOptions);
  readonly url: string;
  readonly sessionId: string;

  /** Live query; identical name + args share one server subscription. Returns unsubscribe. */
  onUpdate<T = any>(
    name: string,
    args: Args | undefined,
    onValue: (value: T) => void,
    onError?: (error: ReactiveError) => void,
  ): () => void;
  /** The query's first value. */
  query<T = any>(name: string, args?: Args): Promise<T>;
  /** For view layers (useSyncExternalStore). */
  watchQuery<T = any>(name: string, args?: Args): QueryWatch<T>;
  paginatedQuery<T = any>(
    name: string,
    args: Args | undefined,
    options: { initialNumItems: number },
    onChange: (state: PaginatedState<T>) => void,
    onError?: (error: ReactiveError) => void,
  ): PaginatedQueryHandle<T>;

  /** Resolves after the updates its commit caused have arrived; rejects with a ReactiveError. */
  mutation<T = any, A extends Args = Args>(name: string, args?: A, options?: MutationOptions<A>): Promise<T>;
  /** Never replayed: rejects with `connection_lost` if the socket drops while it runs. */
  action<T = any>(name: string, args?: Args): Promise<T>;
  /** Switch identity with a token (null signs out); re-sent after every reconnect. */
  authenticate(token: string | null): void;

  connectionState(): ConnectionState;
  onConnectionChange(callback: (state: ConnectionState) => void): () => void;
  reconnectNow(): void;
  close(): void;
}

/** JSON with object keys sorted: the identity of a query's arguments. */
export declare function canonicalJSON(value: unknown): string;
export declare function queryToken(name: string, args?: Args): string;
/** The wait before reconnect attempt `retries` (0-based), in ms. */
export declare function backoffDelay(retries: number, base?: number, max?: number, random?: () => number): number;
/** The WebSocket URL for `url` (a ws/http URL or a path), resolved against the page. */
export declare function resolveUrl(url?: string): string;

/** A new temporary id for an optimistic row, recognisable by `isOptimistic`: `"optimistic:<random>"`. */
export declare function optimisticId(): string;
/** Whether `id` was made by `optimisticId` (a row the server has not confirmed yet). */
export declare function isOptimistic(id: unknown): id is string;
/**
 * `rows` with `row` added (at the end, or the start), unless a row with the same value of `key`
 * is already there: once the server's value holds the created row, that row shows alone.
 */
export declare function withOptimisticRow<T extends object, K extends keyof T>(
  rows: readonly T[],
  row: T,
  key: K,
  options?: { at?: "start" | "end" },
): T[];
