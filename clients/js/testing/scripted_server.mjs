// A scripted socket server for cases a real server cannot be made to produce on cue: results
// held back or reordered, a drop at a chosen moment, a server that never answers.

import { once } from "node:events";

import { WebSocketServer } from "ws";

import { waitFor } from "./wait.mjs";

export class ScriptedConnection {
  constructor(socket, { autoConnect, autoPong }) {
    this.socket = socket;
    this.frames = [];
    this.closed = false;
    socket.on("close", () => (this.closed = true));
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      this.frames.push(frame);
      if (autoConnect && frame.type === "connect") {
        this.send({ type: "connected", protocol: 1, version: 0, limits: { max_message_bytes: 1048576, max_subscriptions: 1000 } });
      }
      if (autoPong && frame.type === "ping") this.send({ type: "pong" });
    });
  }

  send(frame) {
    this.socket.send(JSON.stringify(frame));
  }

  /** The first frame received (from index `since` on) that matches. */
  frame(predicate, { since = 0, timeout = 5000 } = {}) {
    return waitFor(() => this.frames.slice(since).find(predicate), { timeout, message: predicate.toString() });
  }

  ofType(type) {
    return this.frames.filter((frame) => frame.type === type);
  }

  /** Drop the connection without a closing handshake, as a dead network would. */
  drop() {
    this.socket.terminate();
  }
}

/** Start a scripted server; `connections` lists every connection accepted, in order. */
export async function scriptedServer({ autoConnect = true, autoPong = true } = {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  const server = {
    url: `ws://127.0.0.1:${wss.address().port}/reactive/ws/`,
    connections: [],
    acceptedAt: [],
    /** Close every new connection at once (a server that accepts and keeps failing). */
    rejecting: false,
    /** Wait for connection number `index` (0-based). */
    connection(index, timeout = 5000) {
      return waitFor(() => server.connections[index], { timeout, message: `connection ${index}` });
    },
    async close() {
      for (const client of wss.clients) client.terminate();
      await new Promise((resolveClose) => wss.close(resolveClose));
    },
  };
  wss.on("connection", (socket) => {
    server.acceptedAt.push(Date.now());
    if (server.rejecting) {
      socket.terminate();
      return;
    }
    server.connections.push(new ScriptedConnection(socket, { autoConnect, autoPong }));
  });
  return server;
}
