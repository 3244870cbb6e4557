/**
 * Errors as PROTOCOL.md reports them: `{code, message, data?}`, thrown or passed as an `Error`
 * so stack traces and error boundaries work, with the machine code kept for programs.
 */

export class ReactiveError extends Error {
  /**
   * @param {string} code  the protocol's code (`invalid_args`, `user_error`, `connection_lost`, ...)
   * @param {string} [message]  for people
   * @param {unknown} [data]  field errors for `invalid_args`, the payload of a `ReactiveError`
   */
  constructor(code, message, data) {
    super(message || code);
    this.name = "ReactiveError";
    this.code = code;
    this.data = data;
  }

  /** Build from a protocol error object. */
  static from(error) {
    if (error === null || typeof error !== "object") {
      return new ReactiveError("bad_message", `Malformed error object: ${JSON.stringify(error)}`);
    }
    return new ReactiveError(String(error.code ?? "server_error"), String(error.message ?? ""), error.data);
  }
}
