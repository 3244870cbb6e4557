/**
 * The socket manager: one WebSocket, kept open. It knows nothing of queries or requests; it
 * reports opens, frames and closes to the client and reconnects by itself:
 *
 * - exponential backoff with jitter after every close (`backoffDelay`), the retry count being
 *   reset by the client once it has synced past a reconnect (so a server that accepts the
 *   socket and then keeps failing is still backed off);
 * - a `ping` every `heartbeatIntervalMs`, and a forced reconnect when nothing at all has arrived
 *   for `inactivityTimeoutMs` while a ping waits for its `pong` (a half-open socket never
 *   reports a close by itself);
 * - an immediate reconnect on the browser's `online` event, and on `reconnectNow()`.
 */

export const DEFAULT_OPTIONS = Object.freeze({
  backoffBaseMs: 100,
  backoffMaxMs: 16_000,
  heartbeatIntervalMs: 15_000,
  inactivityTimeoutMs: 45_000,
});

/**
 * The wait before reconnect attempt number `retries` (0 for the first after a drop):
 * `base * 2**retries`, capped at `max`, then scaled by a random factor in [0.5, 1] so that
 * clients dropped together do not come back together, and the cap stays a true maximum.
 */
export function backoffDelay(retries, base = DEFAULT_OPTIONS.backoffBaseMs, max = DEFAULT_OPTIONS.backoffMaxMs, random = Math.random) {
  const capped = Math.min(max, base * 2 ** retries);
  return capped * (0.5 + 0.5 * random());
}

export class SocketManager {
  /**
   * @param {string} url
   * @param {object} options  `WebSocket` (a constructor), the timings of DEFAULT_OPTIONS,
   *   `random` (for tests), and the callbacks `onOpen()`, `onFrame(frame)`, `onClose()`,
   *   `onStateChange()`.
   */
  constructor(url, options) {
    this.url = url;
    this.options = { ...DEFAULT_OPTIONS, ...stripUndefined(options) };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError(
        "No WebSocket implementation: pass options.WebSocket (in Node 20, `import { WebSocket } from \"ws\"`).",
      );
    }
    this.state = "disconnected";
    this.retries = 0;
    this.stopped = false;
    this.socket = null;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.lastReceived = 0;
    this.lastPing = 0;
    this.unansweredSince = null; // when the oldest ping still waiting for an answer went out
    this.onOnline = () => this.online();
    this.onlineTarget = typeof window !== "undefined" && typeof window.addEventListener === "function" ? window : null;
  }

  start() {
    this.onlineTarget?.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** Send a frame's text; false when no socket is open (the caller re-sends on the next open). */
  send(text) {
    if (this.state !== "connected" || this.socket === null) return false;
    try {
      this.socket.send(text);
      return true;
    } catch {
      return false;
    }
  }

  /** The client has synced everything it had before the last reconnect: back off from zero. */
  resetRetries() {
    if (this.retries !== 0) {
      this.retries = 0;
      this.options.onStateChange?.();
    }
  }

  /** Connect now: skip a pending backoff wait, or replace the open socket with a new one. */
  reconnectNow() {
    if (this.stopped) return;
    if (this.state === "connecting") return;
    this.drop({ backoff: false });
  }

  online() {
    if (this.stopped) return;
    if (this.state === "disconnected") {
      this.reconnectNow();
    } else if (this.state === "connected") {
      // The network changed under an open socket: ask for a sign of life now.
      this.ping();
    }
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.onlineTarget?.removeEventListener("online", this.onOnline);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const socket = this.detach();
    closeQuietly(socket);
    this.setState("disconnected");
  }

  // Internals --------------------------------------------------------------------------------

  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.stopped) return;
    this.setState("connecting");
    let socket;
    try {
      socket = new this.WebSocket(this.url);
    } catch (error) {
      this.options.onSocketError?.(error);
      this.closed(null);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.lastReceived = this.lastPing = Date.now();
      this.unansweredSince = null;
      this.startHeartbeat();
      this.setState("connected");
      this.options.onOpen?.();
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      this.lastReceived = Date.now();
      this.unansweredSince = null;
      let frame;
      try {
        frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      } catch {
        return; // the server only sends JSON; anything else is noise on a broken proxy
      }
      this.options.onFrame?.(frame);
    };
    socket.onerror = () => {}; // a close event always follows
    socket.onclose = () => this.closed(socket);
  }

  closed(socket) {
    if (socket !== this.socket) return;
    this.detach();
    if (this.stopped) return;
    const wasConnected = this.state === "connected";
    this.scheduleReconnect();
    if (wasConnected) this.options.onClose?.();
  }

  /** Close the current socket (if any) and reconnect, after a backoff wait or at once. */
  drop({ backoff }) {
    const socket = this.detach();
    const wasConnected = this.state === "connected";
    // The old socket may be half-open: don't wait for its closing handshake.
    closeQuietly(socket, { hard: true });
    if (backoff) {
      this.scheduleReconnect();
    } else {
      this.setState("disconnected");
    }
    if (wasConnected) this.options.onClose?.();
    if (!backoff) this.connect();
  }

  scheduleReconnect() {
    const { backoffBaseMs, backoffMaxMs, random } = this.options;
    const delay = backoffDelay(this.retries, backoffBaseMs, backoffMaxMs, random);
    this.retries += 1;
    this.setState("disconnected");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  detach() {
    const socket = this.socket;
    this.socket = null;
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => {};
    }
    return socket;
  }

  startHeartbeat() {
    const { heartbeatIntervalMs, inactivityTimeoutMs } = this.options;
    const tick = Math.max(5, Math.min(heartbeatIntervalMs, inactivityTimeoutMs) / 2);
    // How long a ping may go unanswered before the silence counts: a browser slows the timers
    // of a background tab, and a socket must not be dropped only because no ping went out.
    const grace = Math.max(inactivityTimeoutMs - heartbeatIntervalMs, tick);
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      const now = Date.now();
      if (
        this.unansweredSince !== null &&
        now - this.lastReceived >= inactivityTimeoutMs &&
        now - this.unansweredSince >= grace
      ) {
        this.drop({ backoff: true });
      } else if (now - this.lastPing >= heartbeatIntervalMs) {
        this.ping();
      }
    }, tick);
  }

  ping() {
    const now = Date.now();
    this.lastPing = now;
    this.unansweredSince ??= now;
    this.send('{"type":"ping"}');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.();
  }
}

function closeQuietly(socket, { hard = false } = {}) {
  if (!socket) return;
  try {
    if (hard && typeof socket.terminate === "function") socket.terminate();
    else socket.close();
  } catch {
    // closing a socket that never opened may throw in some implementations
  }
}

function stripUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}
