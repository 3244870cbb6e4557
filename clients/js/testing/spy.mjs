// A WebSocket subclass that records what the client sends and can hold back or act on what it
// receives, to drop a connection at a chosen moment against a real server.

/**
 * `spy.WebSocket` extends `Base`; `spy.sent` lists every frame sent (parsed), `spy.sockets`
 * every socket made. `spy.intercept(frame, socket)` runs before the client sees a frame;
 * returning false hides the frame from the client.
 */
export function spyOn(Base) {
  const spy = { sent: [], sockets: [], intercept: null };
  spy.WebSocket = class SpyWebSocket extends Base {
    constructor(url, protocols) {
      super(url, protocols);
      spy.sockets.push(this);
    }

    send(data) {
      spy.sent.push(JSON.parse(data));
      super.send(data);
    }

    set onmessage(handler) {
      super.onmessage =
        typeof handler === "function"
          ? (event) => {
              if (spy.intercept?.(JSON.parse(event.data), this) === false) return;
              handler(event);
            }
          : handler;
    }

    get onmessage() {
      return super.onmessage;
    }
  };
  spy.ofType = (type) => spy.sent.filter((frame) => frame.type === type);
  return spy;
}
