// Copy the client from the Django app's static files (the one source) into src/, the npm
// package's copy. test/sync.test.mjs fails while the two differ.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const STATIC_DIR = join(here, "..", "..", "..", "reactive", "static", "reactive");
export const SRC_DIR = join(here, "..", "src");

/** Every client file under `root`, as paths relative to it, sorted. */
export function clientFiles(root) {
  const found = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.(js|d\.ts)$/.test(entry.name)) found.push(relative(root, path));
    }
  };
  walk(root);
  return found.sort();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  rmSync(SRC_DIR, { recursive: true, force: true });
  for (const file of clientFiles(STATIC_DIR)) {
    mkdirSync(dirname(join(SRC_DIR, file)), { recursive: true });
    copyFileSync(join(STATIC_DIR, file), join(SRC_DIR, file));
    console.log(`src/${file}`);
  }
}
