/**
 * A paginated query (PROTOCOL.md "Pagination"): a list of pages, each its own live query with
 * the argument `pagination: {num_items, cursor, end_cursor}`.
 *
 * Page 0 starts at the beginning; page N+1 starts at page N's `continue_cursor`. Only the last
 * page has no `end_cursor`: before the next page is asked for, the last page is subscribed
 * again with its `end_cursor` fixed to its `continue_cursor`, so from then on it covers exactly
 * the rows up to where the next page starts, however many that becomes. Rows inserted or
 * deleted between pages grow or shrink a page but never open a gap or repeat a row.
 *
 * While a page is being fixed it keeps showing its last value; the status is `LoadingMore`
 * until the fixed page and the new page have both answered.
 */

export const PaginationStatus = Object.freeze({
  LoadingFirstPage: "LoadingFirstPage",
  CanLoadMore: "CanLoadMore",
  LoadingMore: "LoadingMore",
  Exhausted: "Exhausted",
});

export class PaginatedQuery {
  /**
   * @param {(name: string, args: object, onValue: Function, onError: Function) => () => void} watch
   *   subscribes to one query (the client's `onUpdate`)
   */
  constructor(watch, name, args, { initialNumItems }, onChange, onError) {
    if (!Number.isInteger(initialNumItems) || initialNumItems < 1) {
      throw new TypeError("paginatedQuery: initialNumItems must be a positive integer.");
    }
    if (args && Object.prototype.hasOwnProperty.call(args, "pagination")) {
      throw new TypeError("paginatedQuery: the client sets the `pagination` argument itself.");
    }
    this.watch = watch;
    this.name = name;
    this.args = args ?? {};
    this.onChange = onChange;
    this.onError = onError;
    this.pages = [];
    this.ended = false;
    this.state = { results: [], status: PaginationStatus.LoadingFirstPage };
    this.addPage({ numItems: initialNumItems, cursor: null, endCursor: null });
  }

  /** Ask for `numItems` more rows; false (and nothing happens) unless the status is CanLoadMore. */
  loadMore(numItems) {
    if (this.ended || this.state.status !== PaginationStatus.CanLoadMore) return false;
    if (!Number.isInteger(numItems) || numItems < 1) {
      throw new TypeError("loadMore: numItems must be a positive integer.");
    }
    const last = this.pages[this.pages.length - 1];
    const continueCursor = last.result.continue_cursor;
    if (last.endCursor === null) {
      last.endCursor = continueCursor;
      last.fixing = true;
      this.subscribePage(last);
    }
    this.addPage({ numItems, cursor: continueCursor, endCursor: null });
    this.emit();
    return true;
  }

  unsubscribe() {
    if (this.ended) return;
    this.ended = true;
    for (const page of this.pages) page.unsubscribe?.();
  }

  // Internals --------------------------------------------------------------------------------

  addPage({ numItems, cursor, endCursor }) {
    const page = { numItems, cursor, endCursor, result: undefined, error: undefined, fixing: false, unsubscribe: null };
    this.pages.push(page);
    this.subscribePage(page);
  }

  subscribePage(page) {
    const previous = page.unsubscribe;
    const pagination = { num_items: page.numItems, cursor: page.cursor, end_cursor: page.endCursor };
    // A page that is re-subscribed ignores its old subscription from here on.
    const generation = (page.generation = (page.generation ?? 0) + 1);
    page.unsubscribe = this.watch(
      this.name,
      { ...this.args, pagination },
      (value) => {
        if (this.ended || page.generation !== generation) return;
        page.result = value;
        page.error = undefined;
        page.fixing = false;
        this.emit();
      },
      (error) => {
        if (this.ended || page.generation !== generation) return;
        page.error = error;
        page.fixing = false;
        this.emit();
      },
    );
    previous?.();
  }

  emit() {
    if (this.ended) return;
    const results = [];
    let loading = false;
    let error;
    for (const page of this.pages) {
      if (page.error !== undefined) error ??= page.error;
      if (page.result === undefined || page.fixing) loading = true;
      if (page.result !== undefined) results.push(...page.result.page);
    }
    let status;
    if (this.pages[0].result === undefined) status = PaginationStatus.LoadingFirstPage;
    else if (loading) status = PaginationStatus.LoadingMore;
    else if (this.pages[this.pages.length - 1].result.is_done) status = PaginationStatus.Exhausted;
    else status = PaginationStatus.CanLoadMore;
    const state = error === undefined ? { results, status } : { results, status, error };
    this.state = state;
    if (error !== undefined && error !== this.lastError) this.onError?.(error);
    this.lastError = error;
    this.onChange?.(state);
  }
}
