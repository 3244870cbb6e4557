// A real server for the tests: Daphne running the demo project (tests.settings, so the test
// app's functions are there too) on a free port, with its own throw-away SQLite database.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { WebSocket } from "ws";

import { waitFor } from "./wait.mjs";

/** The repository's root, from this file's place in it (clients/js/testing). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const VENV_PYTHON = join(ROOT, ".venv", "bin", "python");
export const PYTHON = process.env.REACTIVE_PYTHON ?? (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");

const SETUP = [
  "from django.core.management import call_command",
  "call_command('migrate', verbosity=0)",
  "call_command('seed_demo', verbosity=0)",
].join("; ");

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function run(command, args, options) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { ...options, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolveRun() : reject(new Error(`${command} ${args.join(" ")} failed (${code}):\n${stderr}`))));
  });
}

function listening(port) {
  return new Promise((resolveCheck) => {
    const socket = connect(port, "127.0.0.1");
    socket.on("connect", () => {
      socket.destroy();
      resolveCheck(true);
    });
    socket.on("error", () => resolveCheck(false));
  });
}

/** A WebSocket class sending the Origin the server's AllowedHostsOriginValidator wants. */
export function webSocketWithOrigin(origin) {
  return class OriginWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin });
    }
  };
}

/**
 * Start a server: migrate and seed a new database, then run Daphne. The result has `url`,
 * `WebSocket` (sends the right Origin), `stop()` and `start()` (again on the same port and
 * database), and `dispose()` (stop and delete the database).
 */
export async function startServer() {
  const directory = mkdtempSync(join(tmpdir(), "reactive-js-test-"));
  const env = {
    ...process.env,
    DJANGO_SETTINGS_MODULE: "tests.settings",
    SQLITE_PATH: join(directory, "db.sqlite3"),
    PYTHONPATH: ROOT,
    REACTIVE_LOG_LEVEL: "WARNING",
  };
  await run(PYTHON, ["manage.py", "shell", "-c", SETUP], { cwd: ROOT, env });
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  let child = null;
  let stderr = "";
  const killOnExit = () => child?.kill("SIGKILL");
  process.on("exit", killOnExit);

  const server = {
    port,
    origin,
    url: `ws://127.0.0.1:${port}/reactive/ws/`,
    WebSocket: webSocketWithOrigin(origin),
    async start() {
      child = spawn(PYTHON, ["-m", "daphne", "-b", "127.0.0.1", "-p", String(port), "project.asgi:application"], {
        cwd: ROOT,
        env,
        stdio: ["ignore", "ignore", "pipe"],
      });
      stderr = "";
      child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-5000)));
      const started = child;
      await waitFor(
        async () => {
          if (started.exitCode !== null) throw new Error(`daphne exited (${started.exitCode}):\n${stderr}`);
          return listening(port);
        },
        { timeout: 30000, interval: 50, message: `daphne listening on ${port}` },
      );
    },
    async stop() {
      const stopping = child;
      child = null;
      if (stopping === null || stopping.exitCode !== null) return;
      const exited = new Promise((resolveExit) => stopping.once("exit", resolveExit));
      stopping.kill("SIGTERM");
      const timer = setTimeout(() => stopping.kill("SIGKILL"), 10000);
      await exited;
      clearTimeout(timer);
    },
    async dispose() {
      await server.stop();
      process.off("exit", killOnExit);
      rmSync(directory, { recursive: true, force: true });
    },
    get log() {
      return stderr;
    },
  };
  await server.start();
  return server;
}
