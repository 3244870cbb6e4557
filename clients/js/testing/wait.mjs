// Waiting for conditions (never sleeping as an assertion).

/** Resolve with the first truthy value of `condition()`, checked every few ms; reject after `timeout`. */
export async function waitFor(condition, { timeout = 5000, interval = 5, message } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeout} ms waiting for ${message ?? condition.toString()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** Collects the values a callback receives, and waits for one that matches. */
export class Recorder {
  constructor() {
    this.values = [];
    this.callback = (value) => this.values.push(value);
  }

  get last() {
    return this.values[this.values.length - 1];
  }

  /** The first value received (from index `since` on, by default the first ever) that matches. */
  async next(predicate = () => true, { since = 0, timeout = 5000 } = {}) {
    const found = await waitFor(
      () => {
        const index = this.values.findIndex((value, i) => i >= since && predicate(value));
        return index === -1 ? undefined : { value: this.values[index] };
      },
      { timeout, message: predicate.toString() },
    );
    return found.value;
  }
}
