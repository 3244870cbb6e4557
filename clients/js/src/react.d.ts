// Types of react.js: React hooks over the django-reactive-queries client.

import type { ReactNode } from "react";

import type {
  Args,
  ConnectionState,
  OptimisticUpdate,
  PaginationStatusName,
  ReactiveClient,
} from "./client.js";

export declare function ReactiveProvider(props: { client: ReactiveClient; children?: ReactNode }): ReactNode;

/** The client of the nearest ReactiveProvider. */
export declare function useReactiveClient(): ReactiveClient;

/** Undefined while loading, then the live value; a query error is thrown to the error boundary. */
export declare function useQuery<T = any>(name: string, args?: Args | "skip"): T | undefined;

export interface ReactMutation<T = any, A extends Args = Args> {
  (args?: A): Promise<T>;
  /** The same mutation with an optimistic update (at most one). */
  withOptimisticUpdate(update: OptimisticUpdate<A>): ReactMutation<T, A>;
}

export declare function useMutation<T = any, A extends Args = Args>(name: string): ReactMutation<T, A>;

export declare function useAction<T = any, A extends Args = Args>(name: string): (args?: A) => Promise<T>;

export interface UsePaginatedQueryResult<T = any> {
  results: T[];
  status: PaginationStatusName;
  /** Ask for `numItems` more rows; false unless status is CanLoadMore. */
  loadMore(numItems: number): boolean;
}

export declare function usePaginatedQuery<T = any>(
  name: string,
  args: Args | "skip",
  options: { initialNumItems: number },
): UsePaginatedQueryResult<T>;

export declare function useConnectionState(): ConnectionState;
